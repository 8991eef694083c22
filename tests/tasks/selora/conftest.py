"""Shared fixtures: tiny SeLoRA configs, synthetic report data, toy LoRA models."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from fedmed.data.synth_cxr import synthesize
from fedmed.tasks.selora.layer import reset_lora_init

TINY_TOML = Path(__file__).resolve().parents[3] / "configs" / "selora_tiny.toml"


def tiny_run_config(data_dir: Path | str = "unused", **overrides) -> dict:
    """The shipped tiny run config at ``data_dir`` with ``selora.*`` overrides."""
    config = tomllib.loads(TINY_TOML.read_text())
    config["data-dir"] = str(data_dir)
    config.update({f"selora.{k.replace('_', '-')}": v for k, v in overrides.items()})
    return config


class ToyRegressor(nn.Module):
    """One frozen linear layer (``proj``) that peft adapts; input (n, [t,] d)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def toy_lora(
    d_in: int = 16, d_out: int = 12, rank: int = 1, seed: int = 0
) -> nn.Module:
    """ToyRegressor with a peft LoRA adapter on ``proj`` (alpha 8, SeLoRA init)."""
    torch.manual_seed(seed)
    model = ToyRegressor(d_in, d_out)
    model.requires_grad_(False)
    model = inject_adapter_in_model(
        LoraConfig(r=rank, lora_alpha=8 * rank, target_modules=["proj"]), model
    )
    reset_lora_init(model, torch.Generator().manual_seed(seed))
    return model


@pytest.fixture(scope="session")
def report_data(tmp_path_factory) -> Path:
    """Two synthetic IU X-ray sites (16 studies each, 32 px) plus a held-out set."""
    out = tmp_path_factory.mktemp("cxr-reports")
    synthesize(out, num_sites=2, seed=0, size=32, cases_per_site=16, heldout_cases=6)
    return out
