"""PEFT export: a grown SeLoRA adapter folder loads back unchanged with stock peft."""

import json

import torch
from peft import PeftModel

from fedmed.tasks.selora.backbone import tiny_backbone
from fedmed.tasks.selora.config import SeLoRAConfig
from fedmed.tasks.selora.export import export_adapters
from fedmed.tasks.selora.layer import ADAPTER, expand_layer, kaiming_row, lora_layers
from fedmed.tasks.selora.model import build_diffusion_model

WORDS = ("heart", "normal")


def grown_model(cfg: SeLoRAConfig):
    model = build_diffusion_model(cfg, seed=0, words=WORDS)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for i, layer in enumerate(lora_layers(model).values()):
            for _ in range(i % 3):
                expand_layer(layer, kaiming_row(layer.in_features, generator))
            layer.lora_B[ADAPTER].weight.normal_(0, 0.05, generator=generator)
    return model


def test_exported_adapters_load_back_in_peft_with_identical_outputs(tmp_path):
    # Prepare
    cfg = SeLoRAConfig(resolution=16, max_tokens=16, tiny_width=16, tiny_vae=False)
    model = grown_model(cfg)
    ids = model.tokenize(["heart normal", "normal"])
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    with torch.no_grad():
        context = model.encode_text(ids)
        expected = model.unet(x, t, encoder_hidden_states=context).sample
    # Execute
    folders = export_adapters(model, cfg, tmp_path / "adapters")
    fresh = tiny_backbone(
        WORDS, width=16, resolution=16, max_tokens=16, vae=False, seed=0
    )
    unet = PeftModel.from_pretrained(fresh.unet, str(folders["unet"]))
    text = PeftModel.from_pretrained(fresh.text_encoder, str(folders["text_encoder"]))
    with torch.no_grad():
        loaded_context = text(input_ids=ids)[0]
        loaded = unet(x, t, encoder_hidden_states=loaded_context).sample
    # Assert
    config = json.loads((folders["unet"] / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["rank_pattern"]
    assert (folders["unet"] / "adapter_model.safetensors").is_file()
    torch.testing.assert_close(loaded_context, context)
    torch.testing.assert_close(loaded, expected)
    assert max(config["rank_pattern"].values()) == 3
    ranks = json.loads((tmp_path / "adapters" / "ranks.json").read_text())
    assert set(ranks) == {"unet", "text_encoder"}


def test_export_changes_output_when_an_adapter_is_dropped(tmp_path):
    """The round trip above would fail if adapters were not loaded (non-zero B)."""
    cfg = SeLoRAConfig(resolution=16, max_tokens=16, tiny_width=16, tiny_vae=False)
    model = grown_model(cfg)
    ids = model.tokenize(["heart"])
    with torch.no_grad():
        adapted = model.encode_text(ids)
    plain = tiny_backbone(
        WORDS, width=16, resolution=16, max_tokens=16, vae=False, seed=0
    )
    with torch.no_grad():
        assert not torch.allclose(plain.text_encoder(ids)[0], adapted)


def test_adalora_baseline_exports_through_peft(tmp_path):
    cfg = SeLoRAConfig(
        method="adalora", resolution=16, max_tokens=16, tiny_width=16, tiny_vae=False
    )
    model = build_diffusion_model(cfg, seed=0, words=WORDS)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "lora_E" in name:
                param.normal_(0, 0.1)
    ids = model.tokenize(["heart"])
    folders = export_adapters(model, cfg, tmp_path)
    fresh = tiny_backbone(
        WORDS, width=16, resolution=16, max_tokens=16, vae=False, seed=0
    )
    text = PeftModel.from_pretrained(fresh.text_encoder, str(folders["text_encoder"]))
    config = json.loads((folders["text_encoder"] / "adapter_config.json").read_text())
    assert config["peft_type"] == "ADALORA"
    with torch.no_grad():
        torch.testing.assert_close(text(input_ids=ids)[0], model.encode_text(ids))
