"""Evaluation through a secure sum: what a site masks and how the server reads it.

Under secure aggregation a site's evaluation reply would show its own
metrics and statistics, so it masks them like its update
(:mod:`fedmed.privacy.weighted_sum`) and the server learns only sums:
``v_i = [n_i, (n_i m_i, n_i) per declared metric, statistics...]``. The
metric slots are the task's ``evaluate_metric_names`` (value 0, weight 0
where a site has no finite value); the statistics are the task's dense
``secure_statistics`` (fixed keys and lengths, added element-wise; zeros
from a site with nothing). Every site masks the same layout every round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EvaluationSum:
    """What the server reads from a secure evaluation sum."""

    num_examples: float
    metrics: dict[str, float]  # example-weighted means over the sites
    statistics: dict[str, list[float]]  # summed dense statistics


def layout(statistics: Mapping[str, Sequence[float]]) -> dict[str, int]:
    """Key -> length of the dense statistics, in the order they are masked."""
    return {k: len(statistics[k]) for k in sorted(statistics)}


def evaluation_vector(
    num_examples: int,
    metrics: Mapping[str, float],
    metric_names: Sequence[str],
    statistics: Mapping[str, Sequence[float]],
    value_range: float,
) -> np.ndarray:
    """``[n, (n m, n) per metric, statistics...]`` of one site."""
    slots = np.zeros(1 + 2 * len(metric_names))
    slots[0] = num_examples
    for i, name in enumerate(metric_names):
        value = float(metrics.get(name, math.nan)) * num_examples
        if math.isfinite(value) and abs(value) <= value_range:
            slots[1 + 2 * i : 3 + 2 * i] = (value, num_examples)
    dense = [np.asarray(statistics[k], dtype=np.float64) for k in layout(statistics)]
    return np.concatenate([slots, *dense])


def read_evaluation_sum(
    total: np.ndarray, metric_names: Sequence[str], sizes: Mapping[str, int]
) -> EvaluationSum:
    """Split a summed :func:`evaluation_vector` into means and statistics."""
    head = 1 + 2 * len(metric_names)
    if total.size != head + sum(sizes.values()):
        raise ValueError(
            f"secure evaluation sum has {total.size} values, expected "
            f"{head + sum(sizes.values())} for {len(metric_names)} metrics and "
            f"statistics {dict(sizes)}"
        )
    metrics = {}
    for i, name in enumerate(metric_names):
        value, weight = total[1 + 2 * i : 3 + 2 * i]
        if weight >= 0.5:
            metrics[name] = float(value / weight)
    statistics, offset = {}, head
    for key, size in sizes.items():
        statistics[key] = total[offset : offset + size].tolist()
        offset += size
    return EvaluationSum(float(total[0]), metrics, statistics)
