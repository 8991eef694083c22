"""FPT test fixtures: the tiny run config and synthetic high-resolution sites."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

import fedmed.tasks.fpt  # noqa: F401  (registers the task)
from fedmed.tasks.registry import get_task

TINY_TOML = Path(__file__).resolve().parents[3] / "configs" / "fpt_tiny.toml"


@pytest.fixture
def tiny_run_config() -> Callable[..., dict]:
    """``make(data_dir, **fpt_keys)``: the tiny config plus ``fpt.`` overrides."""
    base = tomllib.loads(TINY_TOML.read_text())

    def make(data_dir: Path, **overrides: object) -> dict:
        config = {**base, "data-dir": str(data_dir), "seed": 0}
        config |= {f"fpt.{k.replace('_', '-')}": v for k, v in overrides.items()}
        return config

    return make


@pytest.fixture(scope="session")
def fpt_sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three shifted synthetic sites plus a held-out set, written by the task."""
    out = tmp_path_factory.mktemp("fpt_synth")
    config = {**tomllib.loads(TINY_TOML.read_text()), "data-dir": str(out)}
    get_task(config).synthesize_data(out, num_sites=3, seed=0)
    return out
