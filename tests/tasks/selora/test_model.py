"""Model assembly: SD folder loading, adapter targets, config files."""

import tomllib
from pathlib import Path

import pytest
import torch

from fedmed.config import parse_section
from fedmed.tasks.selora.backbone import tiny_backbone
from fedmed.tasks.selora.config import SeLoRAConfig
from fedmed.tasks.selora.layer import layer_ranks, lora_layers
from fedmed.tasks.selora.model import build_diffusion_model

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def save_pipeline_folder(folder: Path) -> None:
    parts = tiny_backbone(("heart",), width=16, resolution=32, max_tokens=16, seed=3)
    parts.unet.save_pretrained(folder / "unet")
    parts.text_encoder.save_pretrained(folder / "text_encoder")
    parts.tokenizer.save_pretrained(folder / "tokenizer")
    parts.vae.save_pretrained(folder / "vae")
    parts.scheduler.save_pretrained(folder / "scheduler")


def test_pretrained_folder_loads_offline_with_adapters_never_on_the_vae(tmp_path):
    # Prepare
    save_pipeline_folder(tmp_path / "sd")
    cfg = SeLoRAConfig(pretrained=str(tmp_path / "sd"), resolution=32)
    # Execute
    model = build_diffusion_model(cfg, seed=0)
    # Assert
    ranks = layer_ranks(model)
    assert ranks and set(ranks.values()) == {1}
    assert not any(name.startswith("vae.") for name in ranks)
    assert not any(p.requires_grad for p in model.vae.parameters())
    kinds = {name.rsplit(".", 1)[-1] for name in ranks}
    assert kinds == {
        "to_q",
        "to_k",
        "to_v",
        "proj",
        "time_emb_proj",
        "q_proj",
        "k_proj",
        "v_proj",
        "out_proj",
        "fc1",
        "fc2",
    }
    assert not any("to_out" in name or "ff.net.2" in name for name in ranks)
    reloaded = tiny_backbone(("heart",), width=16, resolution=32, max_tokens=16, seed=3)
    torch.testing.assert_close(model.vae.state_dict(), reloaded.vae.state_dict())


def test_missing_pipeline_parts_name_the_folder_to_fill(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(FileNotFoundError, match="text_encoder"):
        build_diffusion_model(SeLoRAConfig(pretrained=str(tmp_path)), seed=0)


def test_targets_are_configurable_per_component():
    cfg = SeLoRAConfig(
        resolution=16,
        tiny_vae=False,
        tiny_width=16,
        max_tokens=16,
        unet_targets="to_k",
        text_targets="",
    )
    model = build_diffusion_model(cfg, seed=0)
    names = list(lora_layers(model))
    assert names and all(n.startswith("unet.") and n.endswith("to_k") for n in names)


@pytest.mark.parametrize("name", ["selora_tiny", "selora_iu_xray", "selora_montgomery"])
def test_shipped_configs_parse(name):
    run_config = tomllib.loads((CONFIGS / f"{name}.toml").read_text())
    cfg = parse_section(SeLoRAConfig, run_config, "selora")
    assert run_config["task.name"] == "selora" and cfg.expand_threshold == 1.1
