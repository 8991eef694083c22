"""Shared SAMBA fixtures: small phantom sites written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmed.data.synth_brats import synthesize
from fedmed.tasks.samba.config import SambaConfig

TINY = {
    "sam_model": "tiny",
    "tiny_image_size": 64,
    "tiny_dim": 32,
    "views": "z",
    "lr": 1e-3,
    "batch_size": 16,
    "encoder_batch_size": 32,
}


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory) -> Path:
    """Two sites x 3 phantoms (site 0: BraTS 2021 naming, site 1: 2023) + 2 held out."""
    root = tmp_path_factory.mktemp("brats")
    synthesize(root, num_sites=2, cases_per_site=3, seed=0, heldout_cases=2)
    return root


@pytest.fixture()
def tiny_config():
    """Factory of tiny-SAM configurations: ``tiny_config(voting=False)``."""

    def make(**overrides) -> SambaConfig:
        return SambaConfig(**{**TINY, **overrides})

    return make
