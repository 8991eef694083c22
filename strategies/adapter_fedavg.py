"""FedAvg over exchanged adapter tensors, with per-reply validation and a run log.

Client contract: reply to ``train`` with the exchanged tensors under
``"arrays"`` and ``"num-examples"`` + ``"site-id"`` under ``"metrics"``;
reply to ``evaluate`` with metrics and optional sufficient statistics under
``"statistics"``. A reply that errs, or whose update the task rejects
(keys, shapes, non-finite values), is logged with its site and left out; the
round still counts if at least ``min_sites`` updates were accepted, else the
global model stays as it was. Aggregation math is the task's
(``Task.aggregate``); this class only unpacks, checks, records and repacks.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable
from logging import ERROR, INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from fedmed.comm.selection import UpdateRejected
from fedmed.runs import RunDirectory
from fedmed.tasks.base import Task
from fedmed.wire import (
    ARRAYS,
    METRICS,
    NUM_EXAMPLES,
    SITE_ID,
    STATISTICS,
    payload_bytes,
    record_to_state,
    state_to_record,
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
        )
        self.task, self.run, self.codec = task, run, codec
        self.min_sites, self.round_offset = min_sites, round_offset
        self._sent: dict[int, int] = {}
        self._sites: dict[int, str] = {}
        self._reference: dict = {}
        self._started = 0.0
        #: Metrics a wrapping strategy adds to this round's train record (DP's
        #: epsilon); the wrapper sets them before calling ``aggregate_train``.
        self.extra_train_metrics: dict[str, float] = {}
        #: False when a wrapper (DP) checkpoints its own, transformed aggregate.
        self.save_checkpoints = True

    # ---------------------------------------------------------------- helpers
    def _site(self, msg: Message) -> str:
        node = msg.metadata.src_node_id
        if (
            not msg.has_error()
            and METRICS in msg.content
            and SITE_ID in msg.content[METRICS]
        ):
            self._sites[node] = str(int(msg.content[METRICS][SITE_ID]))
        return self._sites.get(node, f"node-{node}")

    def _begin(self, messages: Iterable[Message], arrays: ArrayRecord) -> list[Message]:
        messages = list(messages)
        self._sent = {
            m.metadata.dst_node_id: payload_bytes(m.content) for m in messages
        }
        self._reference = record_to_state(arrays)
        self._started = time.perf_counter()
        return messages

    def _log_failure(self, server_round: int, site: str, msg: Message) -> dict:
        log(
            ERROR, "round %d: site %s failed:\n%s", server_round, site, msg.error.reason
        )
        return {"site": site, "reason": msg.error.reason.strip().splitlines()[-1][:300]}

    # ---------------------------------------------------------------- train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        round_k = server_round + self.round_offset
        return self._begin(
            super().configure_train(round_k, arrays, config, grid), arrays
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        round_k = server_round + self.round_offset
        accepted, sites, rejected, bytes_up = [], {}, [], 0
        for msg in replies:
            site = self._site(msg)
            if msg.has_error():
                rejected.append(self._log_failure(round_k, site, msg))
                continue
            bytes_up += (up := payload_bytes(msg.content))
            try:
                state = record_to_state(msg.content[ARRAYS])
                self.task.validate_update(state, self._reference)
                weight = int(msg.content[METRICS][NUM_EXAMPLES])
                if weight <= 0:
                    raise UpdateRejected(f"num-examples must be > 0, found {weight}")
            except (UpdateRejected, ValueError, KeyError) as err:
                log(
                    WARNING,
                    "round %d: rejected update of site %s: %s",
                    round_k,
                    site,
                    err,
                )
                rejected.append({"site": site, "reason": str(err)[:300]})
                continue
            metrics = {k: v for k, v in msg.content[METRICS].items() if k != SITE_ID}
            sites[site] = {
                **metrics,
                "bytes_up": up,
                "bytes_down": self._sent.get(msg.metadata.src_node_id, 0),
            }
            accepted.append((state, weight, metrics))
        record = {
            "round": round_k,
            "phase": "train",
            "sites": sites,
            "rejected": rejected,
            "accepted": len(accepted),
            "bytes_up": bytes_up,
            "bytes_down": sum(self._sent.values()),
        }
        if len(accepted) < self.min_sites:
            log(
                ERROR,
                "round %d: %d valid update(s) < min-sites %d; global model unchanged",
                round_k,
                len(accepted),
                self.min_sites,
            )
            self.run.append_metrics(
                {
                    **record,
                    "aggregated": {},
                    "status": "skipped",
                    "wall_s": time.perf_counter() - self._started,
                }
            )
            return None, None
        aggregate = self.task.aggregate(
            [a[0] for a in accepted], [a[1] for a in accepted]
        )
        if self.save_checkpoints:
            self.run.save_checkpoint(round_k, aggregate, {"codec": self.codec})
        train_metrics = _weighted_means(
            [a[2] for a in accepted], [a[1] for a in accepted]
        )
        self.run.append_metrics(
            {
                **record,
                "aggregated": {**train_metrics, **self.extra_train_metrics},
                "status": "ok",
                "wall_s": time.perf_counter() - self._started,
            }
        )
        del accepted
        gc.collect()
        return state_to_record(aggregate, self.codec), MetricRecord(train_metrics)

    # ---------------------------------------------------------------- evaluate
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        round_k = server_round + self.round_offset
        return self._begin(
            super().configure_evaluate(round_k, arrays, config, grid), arrays
        )

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        round_k = server_round + self.round_offset
        sites, rejected, weights, rows, stats, bytes_up = {}, [], [], [], [], 0
        for msg in replies:
            site = self._site(msg)
            if msg.has_error():
                rejected.append(self._log_failure(round_k, site, msg))
                continue
            bytes_up += (up := payload_bytes(msg.content))
            metrics = {k: v for k, v in msg.content[METRICS].items() if k != SITE_ID}
            sites[site] = {
                **metrics,
                "bytes_up": up,
                "bytes_down": self._sent.get(msg.metadata.src_node_id, 0),
            }
            weights.append(int(metrics.get(NUM_EXAMPLES, 0)))
            rows.append(metrics)
            if STATISTICS in msg.content:
                stats.append(dict(msg.content[STATISTICS]))
        aggregated = _weighted_means(rows, weights) if rows and sum(weights) > 0 else {}
        if len(stats) == len(rows) and stats:
            pooled = self.task.pooled_metrics(_sum_statistics(stats))
            aggregated.update({f"pooled_{k}": v for k, v in pooled.items()})
        self.run.append_metrics(
            {
                "round": round_k,
                "phase": "evaluate",
                "sites": sites,
                "rejected": rejected,
                "aggregated": aggregated,
                "bytes_up": bytes_up,
                "bytes_down": sum(self._sent.values()),
                "wall_s": time.perf_counter() - self._started,
            }
        )
        log(INFO, "round %d evaluation: %s", round_k, aggregated)
        return (
            MetricRecord({k: float(v) for k, v in aggregated.items()})
            if aggregated
            else None
        )


def _weighted_means(rows: list[dict], weights: list[int]) -> dict[str, float]:
    """Example-weighted mean of every scalar metric present in all rows."""
    total = float(sum(weights)) or 1.0
    keys = [
        k
        for k, v in rows[0].items()
        if isinstance(v, int | float) and k != NUM_EXAMPLES
    ]
    out = {
        k: sum(float(r[k]) * w for r, w in zip(rows, weights, strict=True)) / total
        for k in keys
        if all(k in r for r in rows)
    }
    out[NUM_EXAMPLES] = float(sum(weights))
    return out


def _sum_statistics(stats: list[dict]) -> dict[str, list[float]]:
    """Elementwise sum of each site's statistic vectors (same keys required)."""
    keys = set(stats[0])
    return {
        k: np.sum([np.asarray(s[k], dtype=float) for s in stats], axis=0).tolist()
        for k in keys
        if all(k in s and len(s[k]) == len(stats[0][k]) for s in stats)
    }
