"""FedAvg through a secure sum: what a site masks and how the server reads the sum.

Secure aggregation reveals only ``sum_i v_i`` over the sites that sent a
masked vector (:mod:`fedmed.privacy`). To get the example-weighted FedAvg
mean (McMahan et al. 2017, Eq. 1: ``w = sum_i n_i w_i / sum_i n_i``) a site
masks ``v_i = [n_i * w_i, n_i, n_i * m_i1, n_i * ok_i1, ...]``: its update
scaled by its example count (flattened, tensors in sorted-name order), the
count itself, and for each training metric ``m`` the weighted value and its
weight (``ok = 0`` when the site has no finite value for it). Dividing the
summed update by the summed count gives the weighted mean exactly, up to the
fixed-point quantisation; a site that rejects its own update masks zeros and
counts for nothing.

Every value travels in a 64-bit fixed-point ring whose range
``secagg-value-range`` bounds ``|n_i * w_i|``; a site whose scaled update
leaves that range rejects it with a message naming the tensor (values are
never clipped). Metric slots outside the range are left out of the mean
(weight 0) with a warning: metrics are reports, not model state.

Tasks whose aggregation is not this mean (SeLoRA's product-space SVD over
growing ranks) declare ``aggregation = "custom"`` and cannot use it:
:func:`check_secure_aggregation` refuses them. This module never imports the
tasks: what it needs from one is structural (:class:`DeclaredAggregation`,
:class:`UpdateValidator`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from fedmed.comm.selection import UpdateRejected
from fedmed.config import ConfigError
from fedmed.privacy.fixed_point import FixedPointCodec

logger = logging.getLogger(__name__)

RING_BITS = 64  # 8 bytes per masked value on the wire (fp32 updates: 4)


class UpdateValidator(Protocol):
    """Whatever checks a site update against the tensors sent (a task)."""

    def validate_update(
        self, update: Mapping[str, Tensor], reference: Mapping[str, Tensor]
    ) -> None: ...


class DeclaredAggregation(Protocol):
    """Whatever declares how its updates combine (a task's class attributes)."""

    name: str
    aggregation: str


def update_codec(value_range: float, num_parties: int) -> FixedPointCodec:
    """The fixed-point codec every site of a run uses for its masked vector."""
    return FixedPointCodec(RING_BITS, value_range, num_parties)


def vector_length(update_size: int, metric_names: Sequence[str]) -> int:
    """Length of a site's vector: update, example count, two slots per metric."""
    return update_size + 1 + 2 * len(metric_names)


def flatten_update(update: Mapping[str, Tensor]) -> np.ndarray:
    """The update's tensors in sorted-name order as one float64 vector."""
    parts = [update[k].detach().reshape(-1).to(torch.float64) for k in sorted(update)]
    return torch.cat(parts).numpy() if parts else np.zeros(0)


def check_site_update(
    task: UpdateValidator,
    update: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    num_examples: float,
    value_range: float,
    max_examples: float = math.inf,
) -> int:
    """The site's example count if its update can enter the secure sum, else
    ``UpdateRejected``.

    The server cannot inspect a masked update, so the site runs the server's
    own check (keys, shapes, finite values against the tensors it received),
    refuses an example count that is not a finite integer in
    ``[1, max_examples]`` (one site must not outweigh the others) and checks
    that ``n * w`` fits the fixed-point range.
    """
    task.validate_update(update, reference)
    if not (math.isfinite(num_examples) and num_examples == int(num_examples)):
        raise UpdateRejected(f"num-examples must be a finite integer: {num_examples}")
    if not 1 <= num_examples <= max_examples:
        raise UpdateRejected(
            f"num-examples {num_examples:g} outside [1, max-examples-per-site "
            f"{max_examples:g}]"
        )
    for name in sorted(update):
        peak = float(update[name].detach().abs().max()) if update[name].numel() else 0
        if peak * num_examples > value_range:
            raise UpdateRejected(
                f"tensor {name!r} reaches |w| = {peak:.4g}, times the site's "
                f"{num_examples:g} examples {peak * num_examples:.4g}, outside "
                f"secagg-value-range {value_range:g}; values are never clipped: "
                "raise secagg-value-range (costs precision) and rerun"
            )
    return int(num_examples)


def clip_update_norm(
    update: Mapping[str, Tensor], reference: Mapping[str, Tensor], max_norm: float
) -> tuple[dict[str, Tensor], float]:
    """``update`` with ``w_i - w`` scaled to L2 norm <= ``max_norm`` (0 = off).

    The site bounds its own influence before masking, since the server sees
    only the sum (the norm bound of Sun et al. 2019, without noise). Returns
    the bounded update and the norm of the original difference.
    """
    deltas = {k: update[k].double() - reference[k].double() for k in update}
    norm = math.sqrt(sum(float((d * d).sum()) for d in deltas.values()))
    if max_norm <= 0 or norm <= max_norm:
        return dict(update), norm
    scale = max_norm / norm
    bounded = {
        k: (reference[k].double() + deltas[k] * scale).to(update[k].dtype)
        for k in update
    }
    return bounded, norm


def site_vector(
    update: Mapping[str, Tensor] | None,
    num_examples: int,
    metrics: Mapping[str, float],
    metric_names: Sequence[str],
    update_size: int,
    value_range: float,
) -> np.ndarray:
    """``[n w, n, (n m, n ok) per metric]``; all zeros when ``update`` is ``None``."""
    vector = np.zeros(vector_length(update_size, metric_names))
    if update is None:
        return vector
    flat = flatten_update(update)
    if flat.size != update_size:
        raise ValueError(
            f"the kept update has {flat.size} values but the server expects "
            f"{update_size}; the site must train on the round's aggregate"
        )
    vector[:update_size] = flat * num_examples
    vector[update_size] = num_examples
    for slot, name in enumerate(metric_names):
        value = float(metrics.get(name, math.nan)) * num_examples
        if not math.isfinite(value) or abs(value) > value_range:
            if name in metrics:
                logger.warning("metric %s = %s left out of the mean", name, value)
            continue
        base = update_size + 1 + 2 * slot
        vector[base : base + 2] = (value, num_examples)
    return vector


@dataclass(frozen=True)
class WeightedMean:
    """The FedAvg mean read from a secure sum, and what it was weighted by."""

    state: dict[str, Tensor]
    metrics: dict[str, float]
    num_examples: float


def mean_from_sum(
    total: np.ndarray, reference: Mapping[str, Tensor], metric_names: Sequence[str]
) -> WeightedMean:
    """Divide the summed ``n w`` by the summed ``n``; reshape like ``reference``."""
    size = sum(t.numel() for t in reference.values())
    if total.size != vector_length(size, metric_names):
        raise ValueError(
            f"secure sum has {total.size} values, expected "
            f"{vector_length(size, metric_names)} for this model and metrics"
        )
    count = float(total[size])
    if count < 0.5:
        raise ValueError(f"no examples behind the secure sum (n = {count:.3g})")
    state, offset = {}, 0
    for name in sorted(reference):
        ref = reference[name]
        chunk = total[offset : offset + ref.numel()] / count
        state[name] = torch.from_numpy(chunk.reshape(ref.shape)).to(ref.dtype)
        offset += ref.numel()
    metrics = {}
    for slot, name in enumerate(metric_names):
        value, weight = total[size + 1 + 2 * slot : size + 3 + 2 * slot]
        if weight >= 0.5:
            metrics[name] = float(value / weight)
    return WeightedMean({k: state[k] for k in reference}, metrics, count)


def check_secure_aggregation(task: DeclaredAggregation) -> None:
    """Refuse (``ConfigError``) a task a masked weighted sum cannot aggregate."""
    require_mean_aggregation(
        task,
        "secure-aggregation=true",
        "a masked sum needs the same shapes from every site and yields only the "
        "weighted sum a mean needs",
    )


def require_mean_aggregation(task: DeclaredAggregation, setting: str, why: str) -> None:
    """Refuse (``ConfigError``) a task that does not declare ``aggregation = "mean"``.

    Secure aggregation and central DP both assume FedAvg over same-shaped
    updates; a task declares whether that is how it aggregates. ``setting``
    names the run-config choice in the message, ``why`` says why it matters.
    """
    if task.aggregation == "mean":
        return
    raise ConfigError(
        f"{setting}: task {task.name!r} declares aggregation = "
        f"{task.aggregation!r}: its sites may reply with other shapes than they "
        f"received, or its aggregate is not the example-weighted mean; {why}. "
        f"Turn {setting.split('=')[0]} off for this task."
    )
