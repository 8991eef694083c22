"""Heterogeneous-rank aggregation: exact product-space mean, SVD vs zero-pad."""

import pytest
import torch

from fedmed.comm.selection import UpdateRejected
from fedmed.tasks.selora.aggregation import (
    A_SUFFIX,
    B_SUFFIX,
    aggregate_product_space,
    aggregate_zero_padded,
    check_lora_state,
    delta_weight,
    measure_aggregate,
    state_ranks,
)
from fedmed.tasks.selora.layer import KAIMING_ROW_NORM

LAYERS = {"unet.attn.to_q": (24, 20), "text_encoder.fc1": (16, 30)}  # (in, out)


def site_state(ranks: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for layer, (d_in, d_out) in LAYERS.items():
        r = ranks[layer]
        state[layer + A_SUFFIX] = torch.randn(r, d_in, generator=generator)
        state[layer + B_SUFFIX] = torch.randn(d_out, r, generator=generator)
    state["head.bias"] = torch.randn(3, generator=generator)
    return state


@pytest.fixture
def sites():
    ranks = [
        {"unet.attn.to_q": 1, "text_encoder.fc1": 3},
        {"unet.attn.to_q": 4, "text_encoder.fc1": 2},
        {"unet.attn.to_q": 2, "text_encoder.fc1": 2},
    ]
    return [site_state(r, seed) for seed, r in enumerate(ranks)], [10.0, 30.0, 20.0]


def weighted_delta(states, weights, layer):
    total = sum(weights)
    return sum(
        w / total * delta_weight(s, layer) for s, w in zip(states, weights, strict=True)
    )


def test_product_space_mean_is_exact_at_the_sum_of_ranks(sites):
    states, weights = sites
    aggregate = aggregate_product_space(states, weights, rank_rule="sum")
    for layer in LAYERS:
        torch.testing.assert_close(
            delta_weight(aggregate, layer),
            weighted_delta(states, weights, layer),
            rtol=1e-5,
            atol=1e-4,
        )
    assert state_ranks(aggregate) == {"unet.attn.to_q": 7, "text_encoder.fc1": 7}
    torch.testing.assert_close(
        aggregate["head.bias"],
        sum(w * s["head.bias"] for s, w in zip(states, weights, strict=True)) / 60,
    )


def test_svd_at_max_rank_beats_zero_padding_in_reconstruction(sites):
    states, weights = sites
    svd = aggregate_product_space(states, weights, rank_rule="max")
    padded = aggregate_zero_padded(states, weights)
    for layer in LAYERS:
        truth = weighted_delta(states, weights, layer)
        svd_error = torch.linalg.matrix_norm(delta_weight(svd, layer) - truth)
        pad_error = torch.linalg.matrix_norm(delta_weight(padded, layer) - truth)
        assert svd_error < 0.9 * pad_error
        # Eckart-Young: the error is the energy of the dropped singular values
        s = torch.linalg.svdvals(truth)
        rank = max(st[layer + A_SUFFIX].shape[0] for st in states)
        assert float(svd_error) == pytest.approx(float(s[rank:].norm()), rel=1e-4)
    assert state_ranks(svd) == {"unet.attn.to_q": 4, "text_encoder.fc1": 3}
    assert state_ranks(padded) == state_ranks(svd)


def test_aggregate_a_rows_are_orthonormal_at_the_kaiming_norm(sites):
    states, weights = sites
    aggregate = aggregate_product_space(states, weights, rank_rule="max")
    for layer in LAYERS:
        a = aggregate[layer + A_SUFFIX].double()
        b = aggregate[layer + B_SUFFIX].double()
        eye = torch.eye(a.shape[0], dtype=torch.float64)
        torch.testing.assert_close(a @ a.T, KAIMING_ROW_NORM**2 * eye)
        # B carries the singular values: its column norms are sigma / c
        sigma = torch.linalg.svdvals(weighted_delta(states, weights, layer))
        expected = sigma[: a.shape[0]] / KAIMING_ROW_NORM
        torch.testing.assert_close(torch.linalg.norm(b, dim=0), expected)


def test_aggregate_does_not_depend_on_how_sites_split_their_updates(sites):
    # Prepare: the same site updates ΔW_i, each written as (M A_i, B_i M^-1)
    states, weights = sites
    generator = torch.Generator().manual_seed(5)
    resplit = []
    for state in states:
        other = dict(state)
        for layer in LAYERS:
            a, b = state[layer + A_SUFFIX], state[layer + B_SUFFIX]
            mix = torch.randn(a.shape[0], a.shape[0], generator=generator).double()
            other[layer + A_SUFFIX] = (mix @ a.double()).float()
            other[layer + B_SUFFIX] = (b.double() @ torch.linalg.inv(mix)).float()
        resplit.append(other)
    # Execute
    first = aggregate_product_space(states, weights, rank_rule="max")
    second = aggregate_product_space(resplit, weights, rank_rule="max")
    # Assert: same factors up to the sign of each rank
    for layer in LAYERS:
        a1, a2 = first[layer + A_SUFFIX], second[layer + A_SUFFIX]
        b1, b2 = first[layer + B_SUFFIX], second[layer + B_SUFFIX]
        signs = torch.sign((a1 * a2).sum(1))
        torch.testing.assert_close(a2, a1 * signs[:, None], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(b2, b1 * signs[None, :], rtol=1e-4, atol=1e-4)


def test_energy_rule_keeps_the_smallest_rank_with_that_energy():
    u = torch.linalg.qr(torch.randn(20, 20))[0]
    v = torch.linalg.qr(torch.randn(24, 24))[0]
    sigma = torch.tensor([10.0, 1.0, 0.1])
    state = {"l" + B_SUFFIX: u[:, :3] * sigma, "l" + A_SUFFIX: v[:, :3].T}
    low = aggregate_product_space([state], [1.0], rank_rule="energy", energy=0.98)
    high = aggregate_product_space([state], [1.0], rank_rule="energy", energy=0.99999)
    assert state_ranks(low) == {"l": 1} and state_ranks(high) == {"l": 3}


def test_zero_update_keeps_trainable_a_rows_and_exact_zero_product():
    state = {"l" + A_SUFFIX: torch.randn(2, 8), "l" + B_SUFFIX: torch.zeros(6, 2)}
    aggregate = aggregate_product_space([state, state], [1.0, 1.0])
    assert torch.all(aggregate["l" + B_SUFFIX] == 0)
    assert torch.linalg.matrix_norm(aggregate["l" + A_SUFFIX]) > 0.5


def test_check_accepts_rank_growth_and_rejects_bad_updates(sites):
    states, _ = sites
    reference = site_state({"unet.attn.to_q": 2, "text_encoder.fc1": 2}, seed=9)
    check_lora_state(states[1], reference, "site", min_ranks=state_ranks(reference))
    bad = {
        "nan": {**states[1], "head.bias": torch.full((3,), float("nan"))},
        "ranks disagree": {
            **states[1],
            "unet.attn.to_q" + B_SUFFIX: torch.zeros(20, 3),
        },
        "wrong in_features": {
            **states[1],
            "unet.attn.to_q" + A_SUFFIX: torch.zeros(4, 5),
        },
        "unknown key": {**states[1], "extra.weight": torch.zeros(1)},
        "missing key": {k: v for k, v in states[1].items() if k != "head.bias"},
        "not 2-d": {**states[1], "unet.attn.to_q" + A_SUFFIX: torch.zeros(4, 24, 3)},
        "integer": {**states[1], "head.bias": torch.zeros(3, dtype=torch.long)},
    }
    for reason, update in bad.items():
        with pytest.raises(UpdateRejected):
            check_lora_state(update, reference, reason)
    with pytest.raises(UpdateRejected, match="rank"):
        check_lora_state(
            states[0], reference, "shrunk", min_ranks=state_ranks(reference)
        )
    with pytest.raises(UpdateRejected, match="rank"):
        check_lora_state(states[1], reference, "capped", max_rank=3)


def known_energy_sites():
    """Two rank-1 sites whose equal-weight mean update has σ = (2, 1.5) in layer
    "mixed" (orthogonal directions) and σ = 3 in layer "shared" (one direction)."""
    generator = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(20, 20, generator=generator))[0]
    v = torch.linalg.qr(torch.randn(24, 24, generator=generator))[0]
    first = {
        "mixed" + A_SUFFIX: v[:, :1].T,
        "mixed" + B_SUFFIX: 3 * u[:, :1],
        "shared" + A_SUFFIX: v[:, :1].T,
        "shared" + B_SUFFIX: 2 * u[:, :1],
    }
    second = {
        "mixed" + A_SUFFIX: v[:, 1:2].T,
        "mixed" + B_SUFFIX: 4 * u[:, 1:2],
        "shared" + A_SUFFIX: v[:, :1].T,
        "shared" + B_SUFFIX: 4 * u[:, :1],
    }
    return [first, second], [1.0, 1.0]


def test_report_measures_the_dropped_part_of_the_mean_update():
    # Prepare: "mixed" mean = 1.5 u1 v1ᵀ + 2 u2 v2ᵀ; "shared" mean = 3 u1 v1ᵀ
    states, weights = known_energy_sites()
    # Execute
    reports = {
        rule: measure_aggregate(
            states, weights, aggregate_product_space(states, weights, rank_rule=rule)
        )
        for rule in ("max", "sum")
    }
    padded = measure_aggregate(states, weights, aggregate_zero_padded(states, weights))
    # Assert: max keeps σ = 2 of "mixed" and drops 1.5 of the total sqrt(6.25 + 9)
    assert reports["max"]["aggregation_rel_error"] == pytest.approx(1.5 / 15.25**0.5)
    assert reports["max"]["aggregation_rel_error_worst_layer"] == pytest.approx(0.6)
    assert reports["max"]["aggregate_mean_rank"] == 1.0
    assert reports["sum"]["aggregation_rel_error"] == pytest.approx(0.0, abs=1e-6)
    assert reports["sum"]["aggregate_mean_rank"] == 2.0
    # zero-padding averages A and B apart: ¼ (B1 + B2)(A1 + A2) in "mixed"
    assert padded["aggregation_rel_error_worst_layer"] == pytest.approx(0.5**0.5)
