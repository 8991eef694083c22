"""Fisher scores (SeLoRA Eqs. 3-4) and the FI-Ratio expansion rule."""

import pytest
import torch
from torch.func import grad, vmap

from fedmed.tasks.selora.expansion import SelfExpansion
from fedmed.tasks.selora.fisher import FisherProbe, FisherScores, canonical_factors
from fedmed.tasks.selora.layer import (
    ADAPTER,
    KAIMING_ROW_NORM,
    kaiming_row,
    layer_ranks,
    lora_layers,
)
from tests.tasks.selora.conftest import toy_lora


def _reference_scores(model, x, y, k):
    """Eqs. 3-4 from per-sample gradients (torch.func) of current and candidate."""
    layer = lora_layers(model)["proj"]
    w0, b0 = layer.base_layer.weight, layer.base_layer.bias
    scaling = layer.scaling[ADAPTER]
    a = layer.lora_A[ADAPTER].weight.detach()
    b = layer.lora_B[ADAPTER].weight.detach()

    def sample_loss(a_, b_, xi, yi):
        out = xi @ w0.T + b0 + scaling * (xi @ a_.T) @ b_.T
        return ((out - yi) ** 2).mean()

    def fisher(a_, b_):
        ga, gb = vmap(grad(sample_loss, argnums=(0, 1)), in_dims=(None, None, 0, 0))(
            a_, b_, x, y
        )
        return float((ga.pow(2).flatten(1).sum(1) + gb.pow(2).flatten(1).sum(1)).mean())

    a_exp = torch.cat([a, k])
    b_exp = torch.cat([b, torch.zeros(b.shape[0], 1)], 1)
    return fisher(a, b), fisher(a_exp, b_exp)


def set_factors(layer, a: torch.Tensor, b: torch.Tensor) -> None:
    with torch.no_grad():
        layer.lora_A[ADAPTER].weight.copy_(a)
        layer.lora_B[ADAPTER].weight.copy_(b)


def canonical_toy(d_in: int, d_out: int, rank: int):
    """Toy LoRA whose A already has orthonormal rows at the Kaiming norm.

    In that factorisation the probe's scores are Eq. 3-4 on the layer's own A, B.
    """
    model = toy_lora(d_in=d_in, d_out=d_out, rank=rank)
    layer = lora_layers(model)["proj"]
    a, b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
    set_factors(layer, *canonical_factors(a.detach(), torch.randn_like(b)))
    return model, layer


def test_probe_scores_equal_per_sample_fisher_from_torch_func():
    # Prepare
    model, layer = canonical_toy(d_in=10, d_out=6, rank=2)
    x, y = torch.randn(5, 7, 10), torch.randn(5, 7, 6)
    k = kaiming_row(10, torch.Generator().manual_seed(3))
    # Execute
    with FisherProbe({"proj": layer}, {"proj": k}, "per-sample") as probe:
        ((model(x) - y) ** 2).mean().backward()
    scores = probe.scores(batch_size=5)["proj"]
    # Assert
    current, candidate = _reference_scores(model, x, y, k)
    assert scores.current == pytest.approx(current, rel=1e-4)
    assert scores.candidate == pytest.approx(candidate, rel=1e-4)
    assert scores.candidate > scores.current


def test_batch_mode_is_the_squared_norm_of_the_batch_gradient():
    # Prepare
    model, layer = canonical_toy(d_in=10, d_out=6, rank=2)
    x, y = torch.randn(5, 7, 10), torch.randn(5, 7, 6)
    k = kaiming_row(10)
    # Execute
    with FisherProbe({"proj": layer}, {"proj": k}, "batch") as probe:
        ((model(x) - y) ** 2).mean().backward()
    scores = probe.scores(batch_size=5)["proj"]
    # Assert
    grads = [layer.lora_A[ADAPTER].weight.grad, layer.lora_B[ADAPTER].weight.grad]
    assert scores.current == pytest.approx(
        sum(float(g.pow(2).sum()) for g in grads), rel=1e-5
    )
    per_sample = FisherProbe({"proj": layer}, {"proj": k}, "per-sample")
    with per_sample:
        ((model(x) - y) ** 2).mean().backward()
    assert per_sample.scores(5)["proj"].current > scores.current  # E[g^2] >= E[g]^2


def splits_of_one_update(a: torch.Tensor, b: torch.Tensor) -> dict[str, tuple]:
    """The same ΔW = B A written as different (A, B) pairs of the same rank."""
    mix = torch.randn(
        a.shape[0], a.shape[0], generator=torch.Generator().manual_seed(9)
    )
    u, s, vh = torch.linalg.svd(b.double() @ a.double(), full_matrices=False)
    r = a.shape[0]
    even = ((s[:r].sqrt()[:, None] * vh[:r]).float(), (u[:, :r] * s[:r].sqrt()).float())
    return {
        "as trained": (a, b),
        "A x 0.1": (a * 0.1, b / 0.1),
        "A x 10": (a * 10, b / 10),
        "mixed": (mix @ a, b @ torch.linalg.inv(mix)),
        "svd, even split": even,
    }


@pytest.mark.parametrize("mode", ["per-sample", "batch"])
def test_scores_and_decisions_do_not_depend_on_how_delta_w_is_factorised(mode):
    # Prepare
    model = toy_lora(d_in=10, d_out=6, rank=3)
    layer = lora_layers(model)["proj"]
    generator = torch.Generator().manual_seed(4)
    a = 0.3 * torch.randn(3, 10, generator=generator)  # neither orthonormal nor Kaiming
    b = 0.5 * torch.randn(6, 3, generator=generator)
    x, y = (
        torch.randn(5, 7, 10, generator=generator),
        torch.randn(5, 7, 6, generator=generator),
    )
    k = kaiming_row(10, generator)
    # Execute
    ratios = {}
    for name, (a_split, b_split) in splits_of_one_update(a, b).items():
        set_factors(layer, a_split, b_split)
        with FisherProbe({"proj": layer}, {"proj": k}, mode) as probe:
            ((model(x) - y) ** 2).mean().backward()
        ratios[name] = probe.scores(batch_size=5)["proj"].ratio
    # Assert: one ratio, hence one decision for every threshold
    reference = ratios["as trained"]
    assert ratios == pytest.approx({n: reference for n in ratios}, rel=1e-4)


def test_canonical_factors_keep_the_product_with_orthonormal_rows_of_kaiming_norm():
    generator = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(3, 12, generator=generator),
        torch.randn(5, 3, generator=generator),
    )
    a_c, b_c = canonical_factors(a, b)
    torch.testing.assert_close(b_c @ a_c, b @ a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a_c @ a_c.T, KAIMING_ROW_NORM**2 * torch.eye(3))


def _fit_toy(target_rank: int, seed: int, steps: int = 40) -> tuple[dict, FisherScores]:
    """Train rank 1 on y = (W0 + ΔW) x with ΔW of ``target_rank``; check at step t."""
    generator = torch.Generator().manual_seed(seed)
    model = toy_lora(d_in=32, d_out=32, seed=seed)
    u = torch.linalg.qr(torch.randn(32, 32, generator=generator))[0]
    v = torch.linalg.qr(torch.randn(32, 32, generator=generator))[0]
    sigma = torch.tensor([3.0, 2.5, 2.0, 1.5])[:target_rank]
    delta = (u[:, :target_rank] * sigma) @ v[:, :target_rank].T
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2
    )
    expansion = SelfExpansion(model, every=steps, threshold=1.1, generator=generator)
    for step in range(steps):
        x = torch.randn(64, 32, generator=generator)
        y = model.proj.base_layer(x) + x @ delta.T
        expansion.train_step(
            lambda x=x, y=y: ((model(x) - y) ** 2).sum(-1).mean(), optimizer, step, 64
        )
    return layer_ranks(model), expansion.last_scores["proj"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fi_ratio_expands_only_when_the_target_needs_more_rank(seed):
    # Execute
    ranks_low, scores_low = _fit_toy(target_rank=1, seed=seed)
    ranks_high, scores_high = _fit_toy(target_rank=4, seed=seed)
    # Assert
    assert scores_low.ratio < 1.1 and ranks_low["proj"] == 1
    assert scores_high.ratio >= 1.1 and ranks_high["proj"] == 2


def test_no_check_before_t_steps_and_rank_cap_respected():
    # Prepare
    model = toy_lora(d_in=4, d_out=3)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2
    )
    expansion = SelfExpansion(model, every=2, threshold=0.0, max_rank=2)
    x, y = torch.randn(8, 4), torch.randn(8, 3)
    # Execute
    expansion.train_step(lambda: ((model(x) - y) ** 2).mean(), optimizer, 0, 8)
    after_first = layer_ranks(model)["proj"]
    for step in range(1, 8):
        expansion.train_step(lambda: ((model(x) - y) ** 2).mean(), optimizer, step, 8)
    # Assert
    assert after_first == 1
    assert layer_ranks(model)["proj"] == 2 and expansion.expansions == 1


def test_authors_batch_procedure_expands_and_keeps_training():
    model = toy_lora(d_in=8, d_out=8)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2
    )
    expansion = SelfExpansion(model, every=1, threshold=1.0, fisher="batch")
    x, y = torch.randn(8, 8), torch.randn(8, 8)
    losses = [
        expansion.train_step(lambda: ((model(x) - y) ** 2).mean(), optimizer, s, 8)
        for s in range(3)
    ]
    assert layer_ranks(model)["proj"] == 4
    assert all(torch.isfinite(torch.tensor(losses)))
