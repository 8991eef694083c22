"""Exported adapters load where users load them: stock peft and diffusers pipelines."""

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline
from peft import PeftModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fedmed.tasks.selora.backbone import tiny_backbone
from fedmed.tasks.selora.config import SeLoRAConfig
from fedmed.tasks.selora.export import (
    DIFFUSERS_METADATA_KEY,
    DIFFUSERS_WEIGHTS,
    export_adapters,
)
from fedmed.tasks.selora.layer import ADAPTER, expand_layer, kaiming_row, lora_layers
from fedmed.tasks.selora.model import build_diffusion_model

WORDS = ("heart", "normal")
TINY = dict(resolution=16, max_tokens=16, tiny_width=16)


def grown_model(cfg: SeLoRAConfig):
    """Ranks 1..3 across layers, non-zero B, so every layer changes the output."""
    model = build_diffusion_model(cfg, seed=0, words=WORDS)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for i, layer in enumerate(lora_layers(model).values()):
            for _ in range(i % 3):
                expand_layer(layer, kaiming_row(layer.in_features, generator))
            layer.lora_B[ADAPTER].weight.normal_(0, 0.05, generator=generator)
    return model


def adalora_model(cfg: SeLoRAConfig):
    model = build_diffusion_model(cfg, seed=0, words=WORDS)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "lora_E" in name:
                param.normal_(0, 0.1, generator=generator)
    return model


def fresh_backbone(vae: bool):
    return tiny_backbone(WORDS, width=16, resolution=16, max_tokens=16, vae=vae, seed=0)


def tiny_pipeline() -> StableDiffusionPipeline:
    """An SD pipeline of the task's tiny architecture, built offline from configs."""
    return fresh_backbone(vae=True).pipeline()


@torch.no_grad()
def outputs(text_encoder, unet, ids, latents, timesteps):
    """(text features, U-Net noise prediction) for one batch."""
    context = text_encoder(ids)[0]
    return context, unet(latents, timesteps, encoder_hidden_states=context).sample


def probe_batch(model, channels: int, size: int):
    ids = model.tokenize(["heart normal", "normal"])
    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(2, channels, size, size, generator=generator)
    return ids, latents, torch.tensor([10, 500])


def test_exported_adapters_load_back_in_peft_with_identical_outputs(tmp_path):
    # Prepare
    cfg = SeLoRAConfig(**TINY, tiny_vae=False)
    model = grown_model(cfg)
    batch = probe_batch(model, 3, 16)
    expected = outputs(model.text_encoder, model.unet, *batch)
    # Execute
    export_adapters(model, cfg, tmp_path / "adapters")
    peft_dir = tmp_path / "adapters" / "peft"
    fresh = fresh_backbone(vae=False)
    unet = PeftModel.from_pretrained(fresh.unet, str(peft_dir / "unet"))
    text = PeftModel.from_pretrained(fresh.text_encoder, str(peft_dir / "text_encoder"))
    loaded = outputs(lambda ids: text(input_ids=ids), unet, *batch)
    # Assert
    config = json.loads((peft_dir / "unet" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert sorted(set(config["rank_pattern"].values())) == [1, 2, 3]
    assert {
        config["alpha_pattern"][n] / r for n, r in config["rank_pattern"].items()
    } == {8.0}
    torch.testing.assert_close(loaded[0], expected[0])
    torch.testing.assert_close(loaded[1], expected[1])
    ranks = json.loads((tmp_path / "adapters" / "ranks.json").read_text())
    assert set(ranks) == {"unet", "text_encoder"}
    assert max(ranks["unet"].values()) == 3


@pytest.mark.parametrize("method", ["selora", "adalora"])
def test_diffusers_pipeline_load_lora_weights_gives_the_projects_outputs(
    tmp_path, method
):
    # Prepare
    cfg = SeLoRAConfig(**TINY, tiny_vae=True, method=method)
    model = grown_model(cfg) if method == "selora" else adalora_model(cfg)
    batch = probe_batch(model, 4, 8)
    expected = outputs(model.text_encoder, model.unet, *batch)
    pipeline = tiny_pipeline()
    plain = outputs(pipeline.text_encoder, pipeline.unet, *batch)
    # Execute
    export_adapters(model, cfg, tmp_path)
    pipeline.load_lora_weights(str(tmp_path / "diffusers"))
    loaded = outputs(pipeline.text_encoder, pipeline.unet, *batch)
    # Assert: both components changed, and to exactly the project's outputs
    assert not torch.allclose(plain[0], expected[0])
    assert not torch.allclose(plain[1], expected[1])
    torch.testing.assert_close(loaded[0], expected[0])
    torch.testing.assert_close(loaded[1], expected[1])


def test_diffusers_file_carries_per_layer_ranks_and_alphas(tmp_path):
    """Without the header metadata diffusers would scale by 1 instead of alpha/r = 8."""
    # Prepare
    cfg = SeLoRAConfig(**TINY, tiny_vae=True)
    model = grown_model(cfg)
    batch = probe_batch(model, 4, 8)
    expected = outputs(model.text_encoder, model.unet, *batch)
    export_adapters(model, cfg, tmp_path)
    weights = tmp_path / "diffusers" / DIFFUSERS_WEIGHTS
    # Execute
    with safe_open(str(weights), framework="pt") as handle:
        metadata = json.loads(handle.metadata()[DIFFUSERS_METADATA_KEY])
    bare = tmp_path / "bare"
    bare.mkdir()
    save_file(load_file(str(weights)), str(bare / DIFFUSERS_WEIGHTS))
    pipeline = tiny_pipeline()
    pipeline.load_lora_weights(str(bare))
    without_metadata = outputs(pipeline.text_encoder, pipeline.unet, *batch)
    # Assert
    keys = load_file(str(weights)).keys()
    assert all(k.startswith(("unet.", "text_encoder.")) for k in keys)
    for component in ("unet", "text_encoder"):
        ranks = metadata[f"{component}.rank_pattern"]
        alphas = metadata[f"{component}.alpha_pattern"]
        assert {alphas[n] / r for n, r in ranks.items()} == {8.0}
        assert sorted(metadata[f"{component}.target_modules"]) == sorted(ranks)
    assert not torch.allclose(without_metadata[1], expected[1], atol=1e-4)


def test_export_changes_output_when_an_adapter_is_dropped():
    """The round trips above would fail if adapters were not loaded (non-zero B)."""
    cfg = SeLoRAConfig(**TINY, tiny_vae=False)
    model = grown_model(cfg)
    ids = model.tokenize(["heart"])
    with torch.no_grad():
        adapted = model.encode_text(ids)
        assert not torch.allclose(fresh_backbone(False).text_encoder(ids)[0], adapted)


def test_adalora_baseline_exports_through_peft(tmp_path):
    cfg = SeLoRAConfig(**TINY, tiny_vae=False, method="adalora")
    model = adalora_model(cfg)
    ids = model.tokenize(["heart"])
    export_adapters(model, cfg, tmp_path)
    folder = tmp_path / "peft" / "text_encoder"
    text = PeftModel.from_pretrained(fresh_backbone(False).text_encoder, str(folder))
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "ADALORA"
    with torch.no_grad():
        torch.testing.assert_close(text(input_ids=ids)[0], model.encode_text(ids))
