"""FPT run config: paper defaults, validation, shipped configs, user checkpoints,
and the warning when the frozen model has no checkpoint."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from fedmed.config import ConfigError, parse_section
from fedmed.tasks.fpt.config import FptConfig
from fedmed.tasks.fpt.frozen import create_vit
from fedmed.tasks.fpt.model import build_fpt_model
from fedmed.tasks.registry import get_task

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_defaults_are_the_papers_settings():
    cfg = parse_section(FptConfig, {}, "fpt")
    assert (cfg.method, cfg.frozen_model) == ("fpt", "vit_base_patch16_384")
    assert (cfg.high_res, cfg.low_res, cfg.side_reduction) == (512, 224, 8)
    assert (cfg.num_prompts, cfg.token_ratio, cfg.prompt_dropout) == (16, 0.2, 0.5)
    assert (cfg.lr, cfg.weight_decay, cfg.clip_norm, cfg.batch_size) == (
        2e-3,
        0.1,
        1.0,
        16,
    )
    assert (cfg.preload, cfg.cache_dtype) == (True, "fp16")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("fpt.token-ratio", 0.0, "token-ratio"),
        ("fpt.method", "adapter", "fpt.method"),
        ("fpt.side-reductoin", 8, "unknown run-config key"),
        ("fpt.num-classes", 1, "num-classes"),
        ("fpt.class-names", "a,b,c", "class-names"),
        ("fpt.frozen-depth", -1, "frozen-depth"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(key, value, message):
    with pytest.raises(ConfigError, match=message):
        parse_section(FptConfig, {key: value}, "fpt")


@pytest.mark.parametrize(
    "path", sorted(CONFIGS.glob("fpt_*.toml")), ids=lambda p: p.stem
)
def test_shipped_configs_parse(path):
    config = tomllib.loads(path.read_text())
    task = get_task(config)
    assert task.name == "fpt"
    assert task.cfg.num_classes >= 2


def test_missing_checkpoint_says_where_to_put_it(tmp_path, tiny_run_config):
    task = get_task(tiny_run_config(tmp_path, checkpoint=str(tmp_path / "vit.pth")))
    with pytest.raises(FileNotFoundError, match="fpt.checkpoint"):
        task.frozen_identity()


def test_user_checkpoint_is_loaded_with_position_embeddings_resampled(tmp_path):
    # Prepare: weights of the same architecture trained at 64 px
    source = timm.create_model(
        "vit_base_patch16_384",
        pretrained=False,
        img_size=64,
        depth=2,
        embed_dim=32,
        num_heads=4,
        num_classes=10,
    )
    save_file(source.state_dict(), str(tmp_path / "vit.safetensors"))
    cfg = FptConfig(
        checkpoint=str(tmp_path / "vit.safetensors"),
        frozen_depth=2,
        frozen_embed_dim=32,
        frozen_num_heads=4,
        high_res=128,
    )
    # Execute
    vit = create_vit(cfg, seed=0)
    # Assert
    assert vit.pos_embed.shape == (1, 65, 32)
    torch.testing.assert_close(
        vit.blocks[1].attn.qkv.weight, source.blocks[1].attn.qkv.weight
    )
    torch.testing.assert_close(vit.pos_embed[:, 0], source.pos_embed[:, 0])


def _records(caplog, level):
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "fedmed.tasks.fpt.frozen" and r.levelno == level
    ]


def test_randomly_initialised_frozen_vit_is_a_warning(caplog):
    # Prepare: a real timm architecture, no checkpoint
    cfg = FptConfig(frozen_model="vit_tiny_patch16_224", high_res=32)
    # Execute
    with caplog.at_level(logging.INFO):
        create_vit(cfg, seed=0)
    # Assert
    [message] = _records(caplog, logging.WARNING)
    assert "vit_tiny_patch16_224 is randomly initialised" in message
    assert "set fpt.checkpoint" in message


def test_preloading_build_warns_although_the_frozen_vit_stays_on_meta(caplog):
    # Prepare: with preloading, build_model never materialises the frozen weights
    cfg = FptConfig(frozen_model="vit_tiny_patch16_224", high_res=32, low_res=32)
    # Execute
    with caplog.at_level(logging.INFO):
        model = build_fpt_model(cfg, seed=0)
    # Assert
    assert model.frozen is None
    assert len(_records(caplog, logging.WARNING)) == 1


def test_no_warning_with_a_checkpoint_and_info_for_test_architectures(tmp_path, caplog):
    # Prepare
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32)
    save_file(source.state_dict(), str(tmp_path / "vit.safetensors"))
    loaded = FptConfig(
        frozen_model="vit_tiny_patch16_224",
        checkpoint=str(tmp_path / "vit.safetensors"),
        high_res=32,
    )
    shrunken = FptConfig(
        frozen_depth=2, frozen_embed_dim=32, frozen_num_heads=4, high_res=32
    )
    # Execute
    with caplog.at_level(logging.INFO):
        create_vit(loaded, seed=0)
        create_vit(shrunken, seed=0)
    # Assert
    assert _records(caplog, logging.WARNING) == []
    assert len(_records(caplog, logging.INFO)) == 1
