"""Aggregating LoRA adapters whose ranks differ between sites, as pure functions.

Each SeLoRA site grows its own ranks, so the sites' factors A_i (r_i, in) and
B_i (out, r_i) of a layer cannot be averaged entry by entry. Two rules:

``svd`` (product space)
    Average what the adapters do, ΔW = Σ w_i B_i A_i (weights normalised),
    computed exactly from the stacked factors [√w_i B_i] [√w_i A_i] with two
    thin QR decompositions and the SVD of the small core, then truncate to
    rank k and factorise as A = c V_kᵀ, B = U_k S_k / c, with c the norm of a
    Kaiming row of A. With k = Σ r_i the result is exact; k = max r_i is the
    best rank-k approximation (Eckart-Young); ``energy`` keeps the smallest k
    holding that share of Σ σ².
``zero-pad`` (naive comparison)
    Pad every A with zero rows and every B with zero columns to the largest
    rank and average A and B separately. Its product is Σ w_i w_j B_i A_j,
    which mixes sites' factors and is not the mean update.

Why ``max`` is the default rank rule. It keeps every layer's aggregate at the
largest rank a site reached, so the download is no larger than the largest
upload and ranks grow only as fast as the sites' own expansions; ``sum`` is
exact but adds the sites' ranks every round (n sites multiply the ranks
n-fold per round), and ``energy`` may cut ranks below what the sites grew.
The price is the truncated part of the mean update, which is measured, not
assumed: :func:`measure_aggregate` gives the relative Frobenius norm of
(aggregate ΔW - mean ΔW) over all layers, reported every round through
``SeLoRATask.aggregation_report`` (values on real replies of the tiny
configuration, per rule: ``selora_aggregation`` rows of
``benchmarks/results/selora.json``).

Why A = c V_kᵀ. The split of ΔW between A and B is free, but it is what the
sites train from next round. Splitting σ evenly (A = √S Vᵀ) left A rows at
about 0.1x the norm of a Kaiming row, so the next expansion check compared a
full-size Kaiming candidate with shrunken ranks and nearly every layer grew.
With A's rows orthonormal at the Kaiming norm, the aggregate is the canonical
factorisation the FI-Scores are taken in
(:func:`fedmed.tasks.selora.fisher.canonical_factors`),
every rank of A is at the scale of a freshly added one, and the split is a
function of ΔW alone, not of how the sites factorised their updates.

Directions with a zero singular value get a Kaiming-uniform A row and a zero
B column (as a SeLoRA expansion does), so the product is unchanged and the
rank stays trainable instead of being stuck at A = B = 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from fedmed.comm.aggregation import weighted_mean
from fedmed.comm.selection import UpdateRejected
from fedmed.tasks.selora.layer import KAIMING_ROW_NORM, kaiming_row

A_SUFFIX = ".lora_A.default.weight"
B_SUFFIX = ".lora_B.default.weight"
RankRule = Literal["max", "sum", "energy"]
ZERO_SIGMA = 1e-10  # relative to the largest singular value


def lora_pairs(state: Mapping[str, Tensor]) -> dict[str, tuple[str, str]]:
    """Layer name -> (A key, B key) for every LoRA factor pair in ``state``."""
    pairs = {}
    for key in state:
        if key.endswith(A_SUFFIX):
            layer = key[: -len(A_SUFFIX)]
            if layer + B_SUFFIX in state:
                pairs[layer] = (key, layer + B_SUFFIX)
    return pairs


def state_ranks(state: Mapping[str, Tensor]) -> dict[str, int]:
    """Rank of every LoRA layer in an exchanged state (the rows of its A)."""
    return {
        layer: int(state[a].shape[0]) for layer, (a, _) in lora_pairs(state).items()
    }


def _normalised(weights: Sequence[float], count: int) -> list[float]:
    if count == 0:
        raise ValueError("nothing to aggregate: no accepted site states")
    if len(weights) != count:
        raise ValueError(f"{count} states but {len(weights)} weights")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(
            f"weights must be >= 0 with a positive sum, found {list(weights)}"
        )
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def product_space_svd(
    factors: Sequence[tuple[Tensor, Tensor]], weights: Sequence[float]
) -> tuple[Tensor, Tensor, Tensor]:
    """SVD of ΔW = Σ w_i B_i A_i without forming ΔW: (U, S, Vᵀ), float64.

    ``factors`` holds (A_i, B_i); ``weights`` must already sum to one.
    """
    b_cat = torch.cat(
        [b.double() * math.sqrt(w) for (_, b), w in zip(factors, weights, strict=True)],
        1,
    )
    a_cat = torch.cat(
        [a.double() * math.sqrt(w) for (a, _), w in zip(factors, weights, strict=True)],
        0,
    )
    q_b, r_b = torch.linalg.qr(b_cat)
    q_a, r_a = torch.linalg.qr(a_cat.T)
    u, s, vh = torch.linalg.svd(r_b @ r_a.T)
    return q_b @ u, s, vh @ q_a.T


def choose_rank(
    singular: Tensor, ranks: Sequence[int], rule: RankRule, energy: float = 0.99
) -> int:
    """Rank of the re-factorised aggregate: max / sum of site ranks or energy share."""
    if rule == "max":
        return max(ranks)
    if rule == "sum":
        return sum(ranks)
    if rule == "energy":
        power = singular.pow(2)
        total = float(power.sum())
        if total == 0.0:
            return min(ranks)
        kept = torch.cumsum(power, 0) / total
        return max(1, int((kept < energy - 1e-12).sum()) + 1)
    raise ValueError(f"rank rule must be 'max', 'sum' or 'energy', found {rule!r}")


def refactorise(
    u: Tensor, s: Tensor, vh: Tensor, rank: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """A = c V_kᵀ (rank, in), B = U_k S_k / c (out, rank); zero σ: Kaiming A rows.

    c is :data:`KAIMING_ROW_NORM`, the norm of a freshly drawn row of A.
    """
    out_features, in_features = u.shape[0], vh.shape[1]
    a = torch.zeros(rank, in_features, dtype=torch.float64)
    b = torch.zeros(out_features, rank, dtype=torch.float64)
    keep = min(rank, s.numel())
    b[:, :keep] = u[:, :keep] * (s[:keep].clamp_min(0) / KAIMING_ROW_NORM)
    a[:keep] = KAIMING_ROW_NORM * vh[:keep]
    largest = float(s.max()) if s.numel() else 0.0
    for j in range(rank):
        if j >= keep or float(s[j]) <= ZERO_SIGMA * largest or largest == 0.0:
            a[j] = kaiming_row(in_features, generator, dtype=torch.float64)[0]
            b[:, j] = 0.0
    return a, b


def aggregate_product_space(
    states: Sequence[Mapping[str, Tensor]],
    weights: Sequence[float],
    rank_rule: RankRule = "max",
    energy: float = 0.99,
    seed: int = 0,
    max_rank: int = 0,
) -> dict[str, Tensor]:
    """Per layer ΔW = Σ w_i B_i A_i exactly, re-factorised by truncated SVD.

    The rank is capped at min(in, out) (where the product is still exact) and
    at ``max_rank`` when set. Tensors that are not LoRA factor pairs are
    averaged entry by entry.
    """
    norm = _normalised(weights, len(states))
    generator = torch.Generator().manual_seed(seed)
    pairs = lora_pairs(states[0])
    paired = {key for pair in pairs.values() for key in pair}
    rest = [k for k in states[0] if k not in paired]
    out = weighted_mean([{k: s[k] for k in rest} for s in states], norm) if rest else {}
    for _, (a_key, b_key) in sorted(pairs.items()):
        factors = [(s[a_key], s[b_key]) for s in states]
        u, s, vh = product_space_svd(factors, norm)
        rank = choose_rank(s, [a.shape[0] for a, _ in factors], rank_rule, energy)
        rank = min(rank, u.shape[0], vh.shape[1], max_rank or rank)
        a, b = refactorise(u, s, vh, rank, generator)
        out[a_key] = a.to(states[0][a_key].dtype)
        out[b_key] = b.to(states[0][b_key].dtype)
    return {k: out[k] for k in states[0]}


def aggregate_zero_padded(
    states: Sequence[Mapping[str, Tensor]], weights: Sequence[float]
) -> dict[str, Tensor]:
    """Naive heterogeneous-rank FedAvg: zero-pad to the largest rank, then average."""
    norm = _normalised(weights, len(states))
    padded = [dict(s) for s in states]
    for a_key, b_key in lora_pairs(states[0]).values():
        rank = max(s[a_key].shape[0] for s in states)
        for state in padded:
            a, b = state[a_key], state[b_key]
            extra = rank - a.shape[0]
            state[a_key] = torch.cat([a, a.new_zeros(extra, a.shape[1])], 0)
            state[b_key] = torch.cat([b, b.new_zeros(b.shape[0], extra)], 1)
    return weighted_mean(padded, norm)


def delta_weight(state: Mapping[str, Tensor], layer: str) -> Tensor:
    """ΔW / scaling = B A of one layer (float64), for checks and error measures."""
    return state[layer + B_SUFFIX].double() @ state[layer + A_SUFFIX].double()


def check_lora_state(
    received: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    source: str,
    max_rank: int = 0,
    min_ranks: Mapping[str, int] | None = None,
) -> None:
    """Raise :class:`UpdateRejected` unless ``received`` is a valid adapter state.

    Same keys as ``reference``; per LoRA layer A (r, in) and B (out, r) with
    the reference's ``in`` / ``out``, one shared r with 1 <= r <= min(in, out)
    (and <= ``max_rank`` when set, >= ``min_ranks[layer]`` when given); other
    tensors exactly the reference's shape; floating point and finite.
    """
    missing = sorted(set(reference) - set(received))
    unknown = sorted(set(received) - set(reference))
    if missing or unknown:
        raise UpdateRejected(
            f"{source}: keys differ from the adapter's tensors (missing {missing[:3]}, "
            f"unknown {unknown[:3]}); the site must run the same model configuration"
        )
    pairs = lora_pairs(reference)
    for layer, (a_key, b_key) in pairs.items():
        _check_pair(
            received,
            reference,
            layer,
            a_key,
            b_key,
            source,
            max_rank,
            (min_ranks or {}).get(layer, 1),
        )
    paired = {key for pair in pairs.values() for key in pair}
    for key, ref in reference.items():
        if key not in paired and tuple(received[key].shape) != tuple(ref.shape):
            raise UpdateRejected(
                f"{source}: tensor {key!r} has shape {tuple(received[key].shape)}, "
                f"expected {tuple(ref.shape)}"
            )
    _check_values(received, source)


def _check_values(received: Mapping[str, Tensor], source: str) -> None:
    for key, value in received.items():
        if not torch.is_floating_point(value):
            raise UpdateRejected(f"{source}: tensor {key!r} has dtype {value.dtype}")
        if not torch.isfinite(value).all():
            raise UpdateRejected(f"{source}: tensor {key!r} contains NaN or Inf")


def _check_pair(received, reference, layer, a_key, b_key, source, max_rank, min_rank):
    a, b = received[a_key], received[b_key]
    in_features = reference[a_key].shape[1]
    out_features = reference[b_key].shape[0]
    if (
        a.ndim != 2
        or b.ndim != 2
        or a.shape[1] != in_features
        or b.shape[0] != out_features
    ):
        raise UpdateRejected(
            f"{source}: layer {layer!r} has A {tuple(a.shape)} and B {tuple(b.shape)}, "
            f"expected A (r, {in_features}) and B ({out_features}, r)"
        )
    rank = a.shape[0]
    if b.shape[1] != rank:
        raise UpdateRejected(
            f"{source}: layer {layer!r} has A of rank {rank} but B of rank {b.shape[1]}"
        )
    cap = min(in_features, out_features, max_rank or in_features)
    if not min_rank <= rank <= cap:
        raise UpdateRejected(
            f"{source}: layer {layer!r} has rank {rank}, expected between {min_rank} "
            f"and {cap} (ranks only grow from the rank sent and stay below the cap)"
        )


def _gram_sq_norm(b_cat: Tensor, a_cat: Tensor) -> float:
    """||B A||_F² from thin factors: sum((BᵀB) ⊙ (AAᵀ)), never forming B A."""
    return float(((b_cat.T @ b_cat) * (a_cat @ a_cat.T)).sum().clamp_min(0.0))


def measure_aggregate(
    states: Sequence[Mapping[str, Tensor]],
    weights: Sequence[float],
    aggregate: Mapping[str, Tensor],
) -> dict[str, float]:
    """What an aggregate loses against the exact mean update Σ w_i B_i A_i.

    ``aggregation_rel_error`` is ||ΔW_agg - ΔW_mean||_F / ||ΔW_mean||_F with
    both norms summed over every LoRA layer (ΔW / scaling; the scaling is the
    same for every layer of a method), i.e. the share of the mean update the
    rank rule dropped (or, for zero-padding, got wrong);
    ``aggregation_rel_error_worst_layer`` is the largest per-layer value and
    ``aggregate_mean_rank`` the mean rank sent back. Empty without LoRA pairs.
    """
    pairs = lora_pairs(aggregate)
    if not pairs:
        return {}
    norm = _normalised(weights, len(states))
    error_total, mean_total, worst = 0.0, 0.0, 0.0
    for a_key, b_key in pairs.values():
        roots = [math.sqrt(w) for w in norm]
        b_sites = [s[b_key].double() * r for s, r in zip(states, roots, strict=True)]
        a_sites = [s[a_key].double() * r for s, r in zip(states, roots, strict=True)]
        b_agg, a_agg = aggregate[b_key].double(), aggregate[a_key].double()
        mean_sq = _gram_sq_norm(torch.cat(b_sites, 1), torch.cat(a_sites, 0))
        error_sq = _gram_sq_norm(
            torch.cat([*b_sites, -b_agg], 1), torch.cat([*a_sites, a_agg], 0)
        )
        error_total += error_sq
        mean_total += mean_sq
        if mean_sq > 0:
            worst = max(worst, math.sqrt(error_sq / mean_sq))
    ranks = [aggregate[a].shape[0] for a, _ in pairs.values()]
    return {
        "aggregation_rel_error": math.sqrt(error_total / mean_total)
        if mean_total > 0
        else 0.0,
        "aggregation_rel_error_worst_layer": worst,
        "aggregate_mean_rank": sum(ranks) / len(ranks),
    }
