"""DyLoRA baseline: nested-rank truncation, alpha / b scaling (Valipour 2023)."""

import torch

from fedmed.tasks.selora.dylora import NestedRankSampler
from fedmed.tasks.selora.layer import ADAPTER, lora_layers
from tests.tasks.selora.conftest import toy_lora


def test_truncated_forward_uses_first_b_components_with_alpha_over_b():
    model = toy_lora(d_in=6, d_out=5, rank=4)
    layer = lora_layers(model)["proj"]
    with torch.no_grad():
        layer.lora_B[ADAPTER].weight.normal_()
    sampler = NestedRankSampler(model)
    x = torch.randn(3, 6)
    a, b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
    alpha = layer.lora_alpha[ADAPTER]
    with torch.no_grad(), sampler.truncated(2):
        truncated = model(x)
    expected = layer.base_layer(x) + (alpha / 2) * (x @ a[:2].T) @ b[:, :2].T
    torch.testing.assert_close(truncated, expected)
    full = layer.base_layer(x) + (alpha / 4) * (x @ a.T) @ b.T
    torch.testing.assert_close(model(x), full)  # hooks removed, full rank restored


def test_training_samples_every_rank_and_only_updates_the_first_b():
    model = toy_lora(d_in=6, d_out=5, rank=4)
    layer = lora_layers(model)["proj"]
    sampler = NestedRankSampler(model, torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.1
    )
    x, y = torch.randn(8, 6), torch.randn(8, 5)
    b_before = layer.lora_B[ADAPTER].weight.detach().clone()
    sampler.train_step(lambda: ((model(x) - y) ** 2).mean(), optimizer, 0, 8)
    first = sampler.sampled[0]
    changed = (layer.lora_B[ADAPTER].weight.detach() != b_before).any(0)
    assert changed[:first].all() and not changed[first:].any()
    for step in range(1, 40):
        sampler.train_step(lambda: ((model(x) - y) ** 2).mean(), optimizer, step, 8)
    assert set(sampler.sampled) == {1, 2, 3, 4}
