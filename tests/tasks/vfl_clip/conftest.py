"""Shared fixtures: the shipped tiny VFL-CLIP config, synthetic embeddings and sites."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

import fedmed.tasks.vfl_clip  # noqa: F401  (registers "vfl-clip")
from fedmed.data.synth_dermamnist import synthesize
from fedmed.tasks.registry import get_task
from fedmed.tasks.vfl_clip.config import VflClipConfig
from fedmed.tasks.vfl_clip.data import EmbeddedSplit

TINY_TOML = Path(__file__).resolve().parents[3] / "configs" / "vfl_clip_tiny.toml"


def tiny_run_config(data_dir: Path | str = "unused", **overrides) -> dict:
    """The shipped tiny run config, pointed at ``data_dir``, with overrides."""
    config = tomllib.loads(TINY_TOML.read_text())
    config["data-dir"] = str(data_dir)
    config.update({f"vfl-clip.{k.replace('_', '-')}": v for k, v in overrides.items()})
    return config


def tiny_config(**overrides) -> VflClipConfig:
    return get_task(tiny_run_config(**overrides)).cfg


def gaussian_split(rng: np.random.Generator, n: int, dim: int = 32) -> EmbeddedSplit:
    """Normalised embeddings of 7 Gaussian classes (a stand-in for image embeddings)."""
    centres = np.random.default_rng(1234).normal(size=(7, dim))
    labels = rng.integers(0, 7, n)
    points = centres[labels] + 1.5 * rng.normal(size=(n, dim))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return EmbeddedSplit(points.astype(np.float32), labels.astype(np.int64))


@pytest.fixture(scope="session")
def synthetic_sites(tmp_path_factory) -> Path:
    """Synthetic DermaMNIST (28 px) for 3 image-provider sites + held-out set."""
    root = tmp_path_factory.mktemp("vfl_clip_data")
    synthesize(root, num_sites=3, size=28, seed=0, samples_per_site=300)
    return root
