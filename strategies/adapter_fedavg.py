"""FedAvg over exchanged adapter tensors, with per-reply validation and a run log.

Client contract: reply to ``train`` with the exchanged tensors under
``"arrays"`` and ``"num-examples"`` + ``"site-id"`` under ``"metrics"``;
reply to ``evaluate`` with metrics and optional sufficient statistics under
``"statistics"``. A reply that errs, never comes, or whose update the task
rejects (keys, shapes, non-finite values, an example count that is not a
finite integer in ``[1, max-examples-per-site]``, float32 overflow) is
logged with its site and left out (:func:`strategies.replies.screen_replies`);
the round still counts if at least ``min_sites`` updates were accepted, else
the global model stays as it was. Sites are named by their authenticated
node id (:mod:`strategies.identity`), never by what a reply says.

With ``max-update-norm`` > 0 each accepted update ``w_i - w`` is clipped to
that L2 norm before averaging (norm bounding, Sun et al. 2019, "Can You
Really Backdoor Federated Learning?", without noise); each site's row then
records ``update_norm`` (before clipping) and ``clipped``. Aggregation math
is the task's (``Task.aggregate``), metric means are Flower's hooks
(``train_metrics_aggr_fn``/``evaluate_metrics_aggr_fn``); this class only
screens, bounds, records and repacks.

One message per round (``evaluate_with_train``): each train message after
the first carries ``evaluate-first``, so a site evaluates the aggregate it
receives (the previous round's) before training on it and returns both in
one reply; the evaluation is recorded as that earlier round's ``evaluate``
row (``carried_by: train``, its bytes and wall time counted with the train
message that carried it) and only the last round sends an evaluate message.
The numbers are the same as with separate messages: the same model is
evaluated on the same data.

A wrapper (central DP) composes with it through :meth:`screen_train`,
:meth:`skip_train` and :meth:`release_train`: it screens the same way,
combines the updates its own way and releases the result through the same
checkpoint and metrics row.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Mapping
from logging import ERROR, INFO
from typing import Any, TypeVar, cast

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log
from torch import Tensor

from fedmed.comm.selection import UpdateRejected
from fedmed.config import PlatformConfig
from fedmed.privacy.dp import clip_update, update_norm
from fedmed.privacy.weighted_sum import require_mean_aggregation
from fedmed.runs import RoundTally, RunDirectory
from fedmed.tasks.base import Task
from fedmed.wire import (
    EVALUATE_FIRST,
    describe_payload,
    payload_bytes,
    prior_evaluation,
    record_to_state,
    state_to_record,
)
from strategies.identity import SiteIdentity, directory_for
from strategies.replies import (
    Accepted,
    SiteUpdate,
    pooled_metrics,
    read_evaluation,
    read_update,
    record_silent,
    screen_replies,
    weighted_metric_means,
)

DEFAULT_MAX_EXAMPLES = PlatformConfig.max_examples_per_site
T = TypeVar("T")


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
        max_examples: int = DEFAULT_MAX_EXAMPLES,
        max_update_norm: float = 0.0,
        timeout_s: float = 3600.0,
        evaluate_with_train: bool = False,
        last_round: int = 0,
    ) -> None:
        if min_sites < 1:
            raise ValueError(f"min_sites must be >= 1, found {min_sites}")
        if max_update_norm > 0:
            require_mean_aggregation(
                task,
                "max-update-norm>0",
                "the norm bound clips each update w_i - w in the model's shapes",
            )
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
        self.max_examples, self.max_update_norm = max_examples, max_update_norm
        self.timeout_s = timeout_s
        #: One message per round (module doc); ``last_round`` is the run's
        #: last round, the one that still sends an evaluate message.
        self.evaluate_with_train, self.last_round = evaluate_with_train, last_round
        #: The round whose aggregate the next train message evaluates.
        self.pending_evaluation: int | None = (
            pending_evaluation(run, round_offset) if evaluate_with_train else None
        )
        #: Who each node is; chosen from the first grid seen (identity module).
        self.identity: SiteIdentity | None = None
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
        if self.pending_evaluation is not None:
            config = ConfigRecord({**config, EVALUATE_FIRST: True})
        messages = super().configure_train(
            self.round_of(server_round), arrays, config, grid
        )
        return self._send(messages, arrays, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """``Task.aggregate`` of the valid updates, checkpointed and recorded."""
        round_k = self.round_of(server_round)
        updates = self.screen_train(round_k, replies)
        if len(updates) < self.min_sites:
            return self.skip_train(round_k, updates)
        aggregate = self.task.aggregate(
            self.bounded(updates), [u.value.weight for u in updates]
        )
        metrics = dict(
            self.train_metrics_aggr_fn(
                [u.content for u in updates], self.weighted_by_key
            )
        )
        metrics.update(self.task.aggregation_report())
        return self.release_train(
            round_k, len(updates), aggregate, metrics, {"codec": self.codec}
        )

    def screen_train(
        self, round_k: int, replies: Iterable[Message]
    ) -> list[Accepted[SiteUpdate]]:
        """The valid updates of this round; the rest are logged and recorded."""
        replies = list(replies)
        if self.pending_evaluation is not None:
            self._record_carried_evaluation(self.pending_evaluation, replies)
        if self.evaluate_with_train:
            self.pending_evaluation = round_k
        reference, validate = self.reference, self.task.validate_update
        cap = self.max_examples
        updates = self._screen(
            round_k, replies, lambda c: read_update(c, reference, validate, cap)
        )
        for update in updates:
            self.tally.accept(update.site, update.value.metrics)
        return updates

    def bounded(self, updates: list[Accepted[SiteUpdate]]) -> list[dict[str, Tensor]]:
        """The updates, each ``w_i - w`` clipped to ``max-update-norm`` (if set);
        every site's norm and whether it was clipped go into its row."""
        states = [u.value.state for u in updates]
        if self.max_update_norm <= 0:
            return states
        bounded = []
        for update, state in zip(updates, states, strict=True):
            norm = update_norm(state, self.reference)
            clipped = norm > self.max_update_norm
            if clipped:
                log(
                    INFO,
                    "site %s: update norm %.4g clipped to max-update-norm %.4g",
                    update.site,
                    norm,
                    self.max_update_norm,
                )
            self.tally.metrics[update.site].update(
                update_norm=norm, clipped=int(clipped)
            )
            bounded.append(clip_update(state, self.reference, self.max_update_norm))
        return bounded

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
        round_k = self.round_of(server_round)
        if self.evaluate_with_train and round_k < self.last_round:
            return []  # the next train message carries this evaluation
        self.pending_evaluation = None
        messages = super().configure_evaluate(round_k, arrays, config, grid)
        return self._send(messages, arrays, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Example-weighted means of the sites' metrics, plus pooled metrics."""
        round_k = self.round_of(server_round)
        if self.evaluate_with_train and round_k < self.last_round:
            return None  # recorded when the next train replies bring it
        return self._evaluation(round_k, replies, self.tally)

    def _record_carried_evaluation(self, round_k: int, replies: list[Message]) -> None:
        """Record round ``round_k``'s evaluation from the train replies that
        carried it; their bytes and wall time stay with the train row."""
        self._evaluation(round_k, replies, RoundTally(), carried=True)

    def _evaluation(
        self,
        round_k: int,
        replies: Iterable[Message],
        tally: RoundTally,
        *,
        carried: bool = False,
    ) -> MetricRecord | None:
        """Screen evaluation replies (``carried``: the evaluations train replies
        carry), record the round's ``evaluate`` row, return its metrics."""
        cap = self.max_examples

        def read(content: RecordDict) -> tuple[dict[str, Any], RecordDict]:
            evaluation = prior_evaluation(content) if carried else content
            if evaluation is None:
                raise UpdateRejected("reply carries no evaluation")
            return read_evaluation(evaluation, cap), evaluation

        evaluated = self._screen(
            round_k, replies, read, tally=tally, count_bytes=not carried
        )
        for reply in evaluated:
            tally.accept(reply.site, reply.value[0])
        contents = [reply.value[1] for reply in evaluated]
        aggregated: dict[str, Any] = {}
        if contents:
            aggregated = dict(
                self.evaluate_metrics_aggr_fn(contents, self.weighted_by_key)
            )
        aggregated.update(pooled_metrics(self.task, contents))
        extra = {"wall_s": 0.0, "carried_by": "train"} if carried else {}
        self._record(round_k, "evaluate", aggregated, tally=tally, **extra)
        log(INFO, "round %d evaluation: %s", round_k, aggregated)
        if not aggregated:
            return None
        return MetricRecord({k: float(v) for k, v in aggregated.items()})

    # ---------------------------------------------------------------- plumbing
    def _send(
        self, messages: Iterable[Message], arrays: ArrayRecord, grid: Grid
    ) -> list[Message]:
        """Count what goes to each site; keep the tensors replies are checked by
        and the messages replies answer."""
        if self.identity is None:
            self.identity = SiteIdentity(directory_for(grid))
            log(INFO, "sites are named by their %s", self.identity.source)
        messages = list(messages)
        for msg in messages:
            site = self.identity.of_node(msg.metadata.dst_node_id)
            content = msg.content
            self.tally.sent(site, payload_bytes(content), describe_payload(content))
        self.identity.asked(messages)
        self.reference = record_to_state(arrays)
        self.started = time.perf_counter()
        return messages

    def _screen(
        self,
        round_k: int,
        replies: Iterable[Message],
        read: Callable[[RecordDict], T],
        *,
        tally: RoundTally | None = None,
        count_bytes: bool = True,
    ) -> list[Accepted[T]]:
        """:func:`screen_replies` with authenticated site names; every site
        asked that sent nothing is recorded as failed (in ``tally``, default
        the strategy's own)."""
        if self.identity is None:
            self.identity = SiteIdentity()
        identity, replies = self.identity, list(replies)
        tally = self.tally if tally is None else tally
        screened = screen_replies(
            replies,
            read,
            tally,
            where=f"round {round_k}",
            site_of=self._site_of,
            vet=identity.vet,
            count_bytes=count_bytes,
        )
        answered = {identity.node_of(msg) for msg in replies}
        silent = [identity.of_node(n) for n in identity.asked_nodes() - answered]
        where = f"round {round_k}"
        record_silent(tally, silent, [], where=where, timeout_s=self.timeout_s)
        return screened

    def _site_of(self, msg: Message) -> str:
        """The reply's site; bytes counted under a node label before the node
        was known move to the site's name."""
        identity = cast(SiteIdentity, self.identity)
        node = identity.node_of(msg)
        node_label = identity.of_node(node)
        site = identity.site_of(msg)
        self.tally.relabel({node_label: site})
        return site

    def _record(
        self,
        round_k: int,
        phase: str,
        aggregated: Mapping[str, Any],
        *,
        tally: RoundTally | None = None,
        wall_s: float | None = None,
        **extra: Any,
    ) -> None:
        """One metrics row; ``wall_s`` defaults to the time since the phase's
        messages were sent."""
        if wall_s is None:
            wall_s = time.perf_counter() - self.started
        tally = self.tally if tally is None else tally
        self.run.record_round(round_k, phase, aggregated, tally, wall_s=wall_s, **extra)


def pending_evaluation(run: RunDirectory, round_offset: int) -> int | None:
    """The round a resumed run still owes an evaluation (its last checkpoint's,
    when the run stopped before recording it); None for a fresh run."""
    if round_offset == 0:
        return None
    recorded = {
        row["round"] for row in run.read_metrics() if row.get("phase") == "evaluate"
    }
    return None if round_offset in recorded else round_offset
