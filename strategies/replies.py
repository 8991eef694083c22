"""Reading site replies: the one screen every strategy uses, and metric means.

Every reply a strategy receives goes through :func:`screen_replies`: an
error reply (the ClientApp raised, or the SuperLink lost the node) is logged
with its traceback and recorded with its last line; a reply whose content
the strategy's reader refuses (``UpdateRejected``, ``ValueError``,
``KeyError``, ``TypeError``, ``OverflowError``: wrong keys or shapes,
non-finite values, a bad example count) is logged and recorded with the
refusal; everything else is accepted. A refusal never ends the run. Payload
bytes of every answered reply are counted. What a reader checks is the
caller's: :func:`read_update` for training replies (the task's
``validate_update`` against the tensors sent, then the bounds below),
:func:`read_evaluation` for evaluation replies.

Bounded influence (one site must not set the model or stop the run): an
example count is a finite integer in ``[1, max-examples-per-site]`` (``[0,
max]`` for evaluation), so no claimed 1e18 makes the aggregate one site's
update; an update is refused when float32 arithmetic on it overflows (its
squared L2 norm, or example count times its largest value, beyond
``FLOAT32_MAX``), the range every aggregation and clipping here computes in.
Reasons are generic: they name the rule broken, never the site's numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from logging import ERROR, WARNING
from typing import Any, Generic, TypeVar

import torch
from flwr.app import Message, MetricRecord, RecordDict
from flwr.supercore import log
from torch import Tensor

from fedmed.comm.selection import UpdateRejected
from fedmed.runs import NO_REPLY, RoundTally
from fedmed.tasks.base import Task
from fedmed.wire import (
    ARRAYS,
    METRICS,
    NUM_EXAMPLES,
    SITE_ID,
    STATISTICS,
    describe_payload,
    payload_bytes,
    record_to_state,
)

T = TypeVar("T")
REASON_CHARS = 300  # a recorded reason is cut to this many characters
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
#: What a reader may raise on a reply it cannot use: a refusal, not a crash.
REFUSALS = (UpdateRejected, ValueError, KeyError, TypeError, OverflowError)


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
    vet: Callable[[Message, str], None] | None = None,
    count_bytes: bool = True,
) -> list[Accepted[T]]:
    """Keep the replies ``read`` accepts; log and record every other one.

    ``vet(msg, site)`` may refuse a reply before it is read (raising
    ``UpdateRejected``), e.g. a node claiming another site than before.
    ``count_bytes=False`` reads a part of replies whose bytes another phase
    counts (an evaluation carried by a train reply).

    The accepted replies come back ordered by site, not by arrival: float
    sums over sites then add in the same order every run, so a round's
    aggregate does not depend on which site happened to answer first.
    """
    accepted = []
    for msg in replies:
        site = site_of(msg)
        if msg.has_error():
            log(ERROR, "%s: site %s failed:\n%s", where, site, msg.error.reason)
            tally.reject(site, short_reason(msg.error.reason), failed=True)
            continue
        if count_bytes:
            tally.received(
                site, payload_bytes(msg.content), describe_payload(msg.content)
            )
        try:
            if vet is not None:
                vet(msg, site)
            value = read(msg.content)
        except REFUSALS as err:
            log(WARNING, "%s: rejected reply of site %s: %s", where, site, err)
            tally.reject(site, str(err)[:REASON_CHARS])
            continue
        accepted.append(Accepted(site, msg.content, value))
    return sorted(accepted, key=lambda reply: reply.site)


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
            tally.reject(site, NO_REPLY, failed=True)


def read_metrics(content: RecordDict) -> dict[str, Any]:
    """The metrics a site reported, without its ``site-id``."""
    return {k: v for k, v in content[METRICS].items() if k != SITE_ID}


def read_example_count(metrics: Mapping[str, Any], cap: int, *, least: int) -> int:
    """The ``num-examples`` a reply claims: a finite integer in ``[least, cap]``.

    The count is the reply's weight in every mean: unbounded, one site's
    claim of 1e18 makes the aggregate its own update, and ``inf`` overflows.
    """
    if NUM_EXAMPLES not in metrics:
        raise UpdateRejected("reply has no num-examples")
    raw = metrics[NUM_EXAMPLES]
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise UpdateRejected("num-examples is not a number")
    if not math.isfinite(raw):
        raise UpdateRejected("num-examples is not finite")
    if raw != int(raw):
        raise UpdateRejected("num-examples is not an integer")
    count = int(raw)
    if count < least:
        bound = "> 0" if least == 1 else f">= {least}"
        raise UpdateRejected(f"num-examples must be {bound}")
    if count > cap:
        raise UpdateRejected(f"num-examples above max-examples-per-site ({cap})")
    return count


def check_float32_range(state: Mapping[str, Tensor], weight: int) -> None:
    """Refuse an update whose float32 arithmetic overflows (see module doc)."""
    squares, peak = 0.0, 0.0
    for name, tensor in state.items():
        values = tensor.detach().double()
        if not torch.isfinite(values).all():
            raise UpdateRejected(f"tensor {name!r} contains NaN or Inf")
        if values.numel():
            squares += float((values * values).sum())
            peak = max(peak, float(values.abs().max()))
    if squares > FLOAT32_MAX or weight * peak > FLOAT32_MAX:
        raise UpdateRejected(
            "update overflows float32: its squared L2 norm or num-examples times "
            "its largest value exceeds 3.4e38"
        )


def read_update(
    content: RecordDict,
    reference: Mapping[str, Tensor],
    validate: Callable[[Mapping[str, Tensor], Mapping[str, Tensor]], None],
    max_examples: int,
) -> SiteUpdate:
    """A training reply checked against the tensors sent (``validate``) and the
    bounds on its weight and range (``max_examples``: max-examples-per-site)."""
    state = record_to_state(content[ARRAYS])
    validate(state, reference)
    weight = read_example_count(content[METRICS], max_examples, least=1)
    check_float32_range(state, weight)
    return SiteUpdate(state, weight, read_metrics(content))


def read_evaluation(content: RecordDict, max_examples: int) -> dict[str, Any]:
    """An evaluation reply's metrics, its example count bounded like training's."""
    read_example_count(content[METRICS], max_examples, least=0)
    return read_metrics(content)


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


def pooled_metrics(task: Task, contents: Sequence[RecordDict]) -> dict[str, float]:
    """Metrics of the pooled test data (``pooled_*``), when every evaluation
    reply sent its statistics.

    Statistics the task cannot combine (a site sent another layout) cost the
    round its pooled metrics, logged with the reason, not the run.
    """
    if not contents or not all(STATISTICS in c for c in contents):
        return {}
    site_statistics = [dict(c[STATISTICS]) for c in contents]
    try:
        pooled = task.pooled_metrics(site_statistics)
    except (*REFUSALS, IndexError) as err:
        log(ERROR, "pooled metrics left out: statistics do not combine: %r", err)
        return {}
    return {f"pooled_{k}": v for k, v in pooled.items()}
