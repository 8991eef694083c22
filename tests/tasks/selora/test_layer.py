"""SeLoRA expansion (Eq. 2): same output, optimizer state kept, training goes on."""

import torch

from fedmed.tasks.selora.config import SeLoRAConfig
from fedmed.tasks.selora.layer import (
    ADAPTER,
    expand_layer,
    kaiming_row,
    layer_rank,
    lora_layers,
    resize_layer,
)
from fedmed.tasks.selora.model import build_diffusion_model
from tests.tasks.selora.conftest import toy_lora


def _train(model, x, y, steps, optimizer):
    for _ in range(steps):
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        return float(((model(x) - y) ** 2).mean())


def test_expansion_keeps_the_layer_output_and_scaling():
    # Prepare
    model = toy_lora()
    layer = lora_layers(model)["proj"]
    x = torch.randn(8, 16)
    with torch.no_grad():
        layer.lora_B[ADAPTER].weight.normal_()
    before = model(x).detach()
    scaling = layer.scaling[ADAPTER]
    row = kaiming_row(16, torch.Generator().manual_seed(1))
    # Execute
    expand_layer(layer, row)
    # Assert
    torch.testing.assert_close(model(x), before)
    assert layer_rank(layer) == 2 and layer.r[ADAPTER] == 2
    assert layer.scaling[ADAPTER] == scaling
    torch.testing.assert_close(layer.lora_A[ADAPTER].weight[1:], row)
    assert torch.all(layer.lora_B[ADAPTER].weight[:, 1] == 0)


def test_expansion_keeps_the_diffusion_unet_output():
    # Prepare
    cfg = SeLoRAConfig(resolution=16, max_tokens=16, tiny_vae=False, tiny_width=16)
    model = build_diffusion_model(cfg, seed=0, words=("heart",))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B[ADAPTER].weight.normal_(0, 0.1, generator=generator)
    batch = model.prepare(torch.rand(2, 3, 16, 16) * 2 - 1, ["heart", "x"], generator)
    with torch.no_grad():
        before = model.loss(batch)
        noisy = model.noise_scheduler.add_noise(
            batch.latents, batch.noise, batch.timesteps
        )
        sample = model.unet(
            noisy,
            batch.timesteps,
            encoder_hidden_states=model.encode_text(batch.input_ids),
        ).sample
    # Execute
    for layer in lora_layers(model).values():
        expand_layer(layer, kaiming_row(layer.in_features, generator))
    # Assert
    with torch.no_grad():
        after = model.unet(
            noisy,
            batch.timesteps,
            encoder_hidden_states=model.encode_text(batch.input_ids),
        ).sample
        torch.testing.assert_close(model.loss(batch), before)
    torch.testing.assert_close(after, sample, rtol=1e-5, atol=1e-5)
    assert all(layer_rank(layer) == 2 for layer in lora_layers(model).values())


def test_optimizer_keeps_old_adam_state_and_starts_new_entries_fresh():
    # Prepare
    model = toy_lora()
    layer = lora_layers(model)["proj"]
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2
    )
    x, y = torch.randn(32, 16), torch.randn(32, 12)
    _train(model, x, y, 3, optimizer)
    old_a, old_b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
    state_a = {k: v.clone() for k, v in optimizer.state[old_a].items()}
    state_b = {k: v.clone() for k, v in optimizer.state[old_b].items()}
    # Execute
    expand_layer(layer, kaiming_row(16), optimizer)
    # Assert
    new_a, new_b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
    params = [p for group in optimizer.param_groups for p in group["params"]]
    assert any(p is new_a for p in params) and any(p is new_b for p in params)
    assert not any(p is old_a for p in params) and old_a not in optimizer.state
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(optimizer.state[new_a][key][:1], state_a[key])
        assert torch.all(optimizer.state[new_a][key][1:] == 0)
        torch.testing.assert_close(optimizer.state[new_b][key][:, :1], state_b[key])
        assert torch.all(optimizer.state[new_b][key][:, 1:] == 0)
    assert float(optimizer.state[new_a]["step"]) == float(state_a["step"])


def test_training_continues_after_expansion_with_new_parameters_updated():
    # Prepare: a rank-3 target that a rank-1 adapter cannot fit
    torch.manual_seed(0)
    model = toy_lora()
    layer = lora_layers(model)["proj"]
    target = torch.randn(12, 3) @ torch.randn(3, 16)
    x = torch.randn(64, 16)
    y = model.proj.base_layer(x) + x @ target.T
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2
    )
    rank1_loss = _train(model, x, y, 300, optimizer)
    # Execute
    for seed in (1, 2):
        expand_layer(
            layer, kaiming_row(16, torch.Generator().manual_seed(seed)), optimizer
        )
    new_column = layer.lora_B[ADAPTER].weight[:, 1:].detach().clone()
    new_rows = layer.lora_A[ADAPTER].weight[1:].detach().clone()
    rank3_loss = _train(model, x, y, 300, optimizer)
    # Assert
    assert layer_rank(layer) == 3
    assert rank3_loss < 0.2 * rank1_loss
    assert not torch.equal(layer.lora_B[ADAPTER].weight[:, 1:].detach(), new_column)
    assert not torch.equal(layer.lora_A[ADAPTER].weight[1:].detach(), new_rows)


def test_resize_layer_sets_rank_and_keeps_scaling():
    model = toy_lora(rank=2)
    layer = lora_layers(model)["proj"]
    scaling = layer.scaling[ADAPTER]
    resize_layer(layer, 5)
    assert layer.lora_A[ADAPTER].weight.shape == (5, 16)
    assert layer.lora_B[ADAPTER].weight.shape == (12, 5)
    assert (
        layer.scaling[ADAPTER] == scaling and layer.lora_alpha[ADAPTER] == scaling * 5
    )
    assert model(torch.randn(2, 16)).shape == (2, 12)
