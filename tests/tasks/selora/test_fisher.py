"""Fisher scores (SeLoRA Eqs. 3-4) and the FI-Ratio expansion rule."""

import pytest
import torch
from torch.func import grad, vmap

from fedmed.tasks.selora.expansion import SelfExpansion
from fedmed.tasks.selora.fisher import FisherProbe, FisherScores
from fedmed.tasks.selora.layer import ADAPTER, kaiming_row, layer_ranks, lora_layers
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


def test_probe_scores_equal_per_sample_fisher_from_torch_func():
    # Prepare
    model = toy_lora(d_in=10, d_out=6, rank=2)
    layer = lora_layers(model)["proj"]
    with torch.no_grad():
        layer.lora_B[ADAPTER].weight.normal_()
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
    model = toy_lora(d_in=10, d_out=6, rank=2)
    layer = lora_layers(model)["proj"]
    with torch.no_grad():
        layer.lora_B[ADAPTER].weight.normal_()
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
