"""FedAvg over exchanged adapter tensors, with per-reply validation and a run log.

Client contract: reply to ``train`` with the exchanged tensors under
``"arrays"`` and ``"num-examples"`` + ``"site-id"`` under ``"metrics"``;
reply to ``evaluate`` with metrics and optional sufficient statistics under
``"statistics"``. A reply that errs, or whose update the task rejects
(keys, shapes, non-finite values, no examples), is logged with its site and
left out (:func:`strategies.replies.screen_replies`); the round still counts
if at least ``min_sites`` updates were accepted, else the global model stays
as it was. Aggregation math is the task's (``Task.aggregate``), metric means
are Flower's hooks (``train_metrics_aggr_fn``/``evaluate_metrics_aggr_fn``);
this class only screens, records and repacks.

A wrapper (central DP) composes with it through :meth:`screen_train`,
:meth:`skip_train` and :meth:`release_train`: it screens the same way,
combines the updates its own way and releases the result through the same
checkpoint and metrics row.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Mapping
from logging import ERROR, INFO
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log
from torch import Tensor

from fedmed.runs import RoundTally, RunDirectory
from fedmed.tasks.base import Task
from fedmed.wire import STATISTICS, payload_bytes, record_to_state, state_to_record
from strategies.replies import (
    Accepted,
    SiteNames,
    SiteUpdate,
    read_metrics,
    read_update,
    screen_replies,
    weighted_metric_means,
)


class AdapterFedAvg(FedAvg):
    """Weighted FedAvg of validated site updates, logged to a run directory."""

    def __init__(
        self,
        task: Task,
        run: RunDirectory,
        *,
        codec: str = "fp32",
        min_sites: int = 2,
        fraction_train: float = 1.0,
        round_offset: int = 0,
    ) -> None:
        if min_sites < 1:
            raise ValueError(f"min_sites must be >= 1, found {min_sites}")
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=1.0,
            min_train_nodes=min_sites,
            min_evaluate_nodes=min_sites,
            min_available_nodes=min_sites,
            train_metrics_aggr_fn=weighted_metric_means,
            evaluate_metrics_aggr_fn=weighted_metric_means,
        )
        self.task, self.run, self.codec = task, run, codec
        self.min_sites, self.round_offset = min_sites, round_offset
        self.sites = SiteNames()
        self.tally = RoundTally()
        #: The tensors sent this round: what replies are checked against.
        self.reference: dict[str, Tensor] = {}
        self.started = 0.0

    def round_of(self, server_round: int) -> int:
        """The run's round number (a resumed run continues its count)."""
        return server_round + self.round_offset

    # ---------------------------------------------------------------- train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = super().configure_train(
            self.round_of(server_round), arrays, config, grid
        )
        return self._send(messages, arrays)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """``Task.aggregate`` of the valid updates, checkpointed and recorded."""
        round_k = self.round_of(server_round)
        updates = self.screen_train(round_k, replies)
        if len(updates) < self.min_sites:
            return self.skip_train(round_k, updates)
        aggregate = self.task.aggregate(
            [u.value.state for u in updates], [u.value.weight for u in updates]
        )
        metrics = self.train_metrics_aggr_fn(
            [u.content for u in updates], self.weighted_by_key
        )
        return self.release_train(
            round_k, len(updates), aggregate, dict(metrics), {"codec": self.codec}
        )

    def screen_train(
        self, round_k: int, replies: Iterable[Message]
    ) -> list[Accepted[SiteUpdate]]:
        """The valid updates of this round; the rest are logged and recorded."""
        reference, validate = self.reference, self.task.validate_update
        updates = screen_replies(
            replies,
            lambda content: read_update(content, reference, validate),
            self.tally,
            where=f"round {round_k}",
            site_of=self._site_of,
        )
        for update in updates:
            self.tally.accept(update.site, update.value.metrics)
        return updates

    def skip_train(
        self, round_k: int, updates: list[Accepted[SiteUpdate]]
    ) -> tuple[None, None]:
        """Too few valid updates: record the round as skipped, keep the model."""
        log(
            ERROR,
            "round %d: %d valid update(s) < min-sites %d; global model unchanged",
            round_k,
            len(updates),
            self.min_sites,
        )
        self._record(round_k, "train", {}, accepted=len(updates), status="skipped")
        return None, None

    def release_train(
        self,
        round_k: int,
        accepted: int,
        aggregate: dict[str, Tensor],
        metrics: dict[str, float],
        checkpoint: Mapping[str, Any],
    ) -> tuple[ArrayRecord, MetricRecord]:
        """Checkpoint the aggregate, then record the round (a kill loses neither)."""
        self.run.save_checkpoint(round_k, aggregate, checkpoint)
        self._record(round_k, "train", metrics, accepted=accepted, status="ok")
        gc.collect()  # the round's updates can be large; free them before the next
        return state_to_record(aggregate, self.codec), MetricRecord(metrics)

    # ---------------------------------------------------------------- evaluate
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = super().configure_evaluate(
            self.round_of(server_round), arrays, config, grid
        )
        return self._send(messages, arrays)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Example-weighted means of the sites' metrics, plus pooled metrics."""
        round_k = self.round_of(server_round)
        evaluated = screen_replies(
            replies,
            read_metrics,
            self.tally,
            where=f"round {round_k}",
            site_of=self._site_of,
        )
        for reply in evaluated:
            self.tally.accept(reply.site, reply.value)
        contents = [reply.content for reply in evaluated]
        aggregated: dict[str, Any] = {}
        if contents:
            aggregated = dict(
                self.evaluate_metrics_aggr_fn(contents, self.weighted_by_key)
            )
        aggregated.update(self._pooled(contents))
        self._record(round_k, "evaluate", aggregated)
        log(INFO, "round %d evaluation: %s", round_k, aggregated)
        if not aggregated:
            return None
        return MetricRecord({k: float(v) for k, v in aggregated.items()})

    def _pooled(self, contents: list[RecordDict]) -> dict[str, float]:
        """Metrics of the pooled test data, when every site sent its statistics."""
        if not contents or not all(STATISTICS in c for c in contents):
            return {}
        site_statistics = [dict(c[STATISTICS]) for c in contents]
        pooled = self.task.pooled_metrics(site_statistics)
        return {f"pooled_{k}": v for k, v in pooled.items()}

    # ---------------------------------------------------------------- plumbing
    def _send(self, messages: Iterable[Message], arrays: ArrayRecord) -> list[Message]:
        """Count what goes to each site; keep the tensors replies are checked by."""
        messages = list(messages)
        for msg in messages:
            site = self.sites.of_node(msg.metadata.dst_node_id)
            self.tally.sent(site, payload_bytes(msg.content))
        self.reference = record_to_state(arrays)
        self.started = time.perf_counter()
        return messages

    def _site_of(self, msg: Message) -> str:
        node_label = self.sites.of_node(msg.metadata.src_node_id)
        site = self.sites.learn(msg)
        self.tally.relabel({node_label: site})
        return site

    def _record(
        self, round_k: int, phase: str, aggregated: Mapping[str, Any], **extra: Any
    ) -> None:
        wall_s = time.perf_counter() - self.started
        self.run.record_round(
            round_k, phase, aggregated, self.tally, wall_s=wall_s, **extra
        )
