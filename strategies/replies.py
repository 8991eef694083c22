"""Reading site replies: the one screen every strategy uses, and metric means.

Every reply a strategy receives goes through :func:`screen_replies`: an
error reply (the ClientApp raised, or the SuperLink lost the node) is logged
with its traceback and recorded with its last line; a reply whose content
the strategy's reader refuses (``UpdateRejected``, ``ValueError``,
``KeyError``: wrong keys or shapes, non-finite values, a missing example
count) is logged and recorded with the refusal; everything else is
accepted. Payload bytes of every answered reply are counted. What a reader
checks is the caller's: :func:`read_update` for training replies (the
task's ``validate_update`` against the tensors sent), :func:`read_metrics`
for evaluation replies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from logging import ERROR, WARNING
from typing import Any, Generic, TypeVar

from flwr.app import Message, MetricRecord, RecordDict
from flwr.supercore import log
from torch import Tensor

from fedmed.comm.selection import UpdateRejected
from fedmed.runs import RoundTally
from fedmed.wire import (
    ARRAYS,
    METRICS,
    NUM_EXAMPLES,
    SITE_ID,
    payload_bytes,
    record_to_state,
)

T = TypeVar("T")
REASON_CHARS = 300  # a recorded reason is cut to this many characters


@dataclass(frozen=True)
class Accepted(Generic[T]):
    """A reply the reader accepted: the site, the raw content, what was read."""

    site: str
    content: RecordDict
    value: T


@dataclass(frozen=True)
class SiteUpdate:
    """One site's training reply: its update, weight and reported metrics."""

    state: dict[str, Tensor]
    weight: int
    metrics: dict[str, Any]


def short_reason(reason: str) -> str:
    """The line of an error reason worth a metrics row (a traceback's last)."""
    lines = reason.strip().splitlines()
    return (lines[-1] if lines else "")[:REASON_CHARS]


def screen_replies(
    replies: Iterable[Message],
    read: Callable[[RecordDict], T],
    tally: RoundTally,
    *,
    where: str,
    site_of: Callable[[Message], str],
) -> list[Accepted[T]]:
    """Keep the replies ``read`` accepts; log and record every other one."""
    accepted = []
    for msg in replies:
        site = site_of(msg)
        if msg.has_error():
            log(ERROR, "%s: site %s failed:\n%s", where, site, msg.error.reason)
            tally.reject(site, short_reason(msg.error.reason))
            continue
        tally.received(site, payload_bytes(msg.content))
        try:
            value = read(msg.content)
        except (UpdateRejected, ValueError, KeyError) as err:
            log(WARNING, "%s: rejected reply of site %s: %s", where, site, err)
            tally.reject(site, str(err)[:REASON_CHARS])
            continue
        accepted.append(Accepted(site, msg.content, value))
    return accepted


def record_silent(
    tally: RoundTally,
    asked: Sequence[str],
    answered: Iterable[str],
    *,
    where: str,
    timeout_s: float,
) -> None:
    """Record every site asked that neither answered nor was already rejected."""
    heard = set(answered) | {r["site"] for r in tally.rejected}
    for site in asked:
        if site not in heard:
            log(ERROR, "%s: site %s sent no reply in %.0f s", where, site, timeout_s)
            tally.reject(site, "no reply (timeout)")


def read_metrics(content: RecordDict) -> dict[str, Any]:
    """The metrics a site reported, without its ``site-id``."""
    return {k: v for k, v in content[METRICS].items() if k != SITE_ID}


def read_update(
    content: RecordDict,
    reference: Mapping[str, Tensor],
    validate: Callable[[Mapping[str, Tensor], Mapping[str, Tensor]], None],
) -> SiteUpdate:
    """A training reply checked against the tensors sent (``validate``)."""
    state = record_to_state(content[ARRAYS])
    validate(state, reference)
    weight = int(content[METRICS][NUM_EXAMPLES])
    if weight <= 0:
        raise UpdateRejected(f"num-examples must be > 0, found {weight}")
    return SiteUpdate(state, weight, read_metrics(content))


class SiteNames:
    """Which site each node is, learnt from the ``site-id`` its replies carry."""

    def __init__(self) -> None:
        self._names: dict[int, str] = {}

    def of_node(self, node: int) -> str:
        """The site's name, or ``node-<id>`` until one of its replies names it."""
        return self._names.get(node, f"node-{node}")

    def learn(self, msg: Message) -> str:
        """The name of the site that sent ``msg`` (remembered for later rounds)."""
        node = msg.metadata.src_node_id
        if not msg.has_error() and SITE_ID in msg.content.get(METRICS, {}):
            self._names[node] = str(int(msg.content[METRICS][SITE_ID]))
        return self.of_node(node)


def metric_means(
    rows: Sequence[Mapping[str, Any]], weights: Sequence[float]
) -> dict[str, float]:
    """Weighted mean of every scalar metric any row reports, plus the total
    weight as ``num-examples`` (McMahan et al. 2017's example weighting).

    Each metric is averaged over the rows that report a finite value for it,
    weighted by those rows' weights: a site without test cases (no AUC, or a
    NaN) leaves the others' metrics in place. A metric whose reporting rows
    all weigh 0 is logged and left out.
    """
    sums: dict[str, float] = {}
    mass: dict[str, float] = {}
    for row, weight in zip(rows, weights, strict=True):
        for key, value in row.items():
            if key == NUM_EXAMPLES or isinstance(value, bool):
                continue
            if not isinstance(value, int | float) or not math.isfinite(value):
                continue
            sums[key] = sums.get(key, 0.0) + float(value) * weight
            mass[key] = mass.get(key, 0.0) + float(weight)
    out = {k: sums[k] / mass[k] for k in sums if mass[k] > 0}
    if dropped := sorted(set(sums) - set(out)):
        log(WARNING, "metrics %s left out: only weight-0 sites report them", dropped)
    out[NUM_EXAMPLES] = float(sum(weights))
    return out


def weighted_metric_means(contents: list[RecordDict], weighted_by: str) -> MetricRecord:
    """Flower's metric-aggregation hook: :func:`metric_means` of the replies,
    weighted by their ``weighted_by`` metric; empty without any weight."""
    rows = [read_metrics(c) for c in contents]
    weights = [int(row.get(weighted_by, 0)) for row in rows]
    if not rows or sum(weights) <= 0:
        return MetricRecord()
    return MetricRecord(metric_means(rows, weights))
