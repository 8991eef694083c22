"""Aggregation math over exchanged states, as pure functions of tensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def weighted_mean(
    states: Sequence[Mapping[str, Tensor]], weights: Sequence[float]
) -> dict[str, Tensor]:
    """Example-weighted mean of same-shaped states (FedAvg, McMahan et al. 2017).

    Accumulates in float64 so the result equals the exact weighted mean to
    float32 precision regardless of the number of sites.
    """
    if not states:
        raise ValueError("nothing to aggregate: no accepted site states")
    if len(states) != len(weights):
        raise ValueError(f"{len(states)} states but {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(
            f"weights must sum to a positive number, found {list(weights)}"
        )
    keys = list(states[0])
    out: dict[str, Tensor] = {}
    for key in keys:
        acc = torch.zeros_like(states[0][key], dtype=torch.float64)
        for state, weight in zip(states, weights, strict=True):
            acc += state[key].to(torch.float64) * (float(weight) / total)
        out[key] = acc.to(states[0][key].dtype)
    return out
