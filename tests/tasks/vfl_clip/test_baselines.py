"""Baselines of the paper's table run in the same harness."""

from __future__ import annotations

import numpy as np

from fedmed.data.medmnist_npz import load_split
from fedmed.tasks.vfl_clip.baselines import centralised_coop, resnet_baseline, zero_shot
from fedmed.tasks.vfl_clip.model import build_text_model

from .conftest import gaussian_split, tiny_config


def test_zero_shot_and_centralised_coop_report_the_same_metrics():
    # Prepare
    cfg = tiny_config()
    rng = np.random.default_rng(0)
    train, test = gaussian_split(rng, 120), gaussian_split(rng, 60)
    # Execute
    zero = zero_shot(build_text_model(cfg, 0), cfg, test)
    coop, _ = centralised_coop(cfg, train, test, rounds=30)
    # Assert
    assert set(zero) == set(coop) == {"auc", "acc", "acc_macro", "num_examples"}
    assert coop["auc"] > 0.6  # trained prompts separate the Gaussian classes


def test_resnet18_trains_on_images(synthetic_sites):
    # Prepare
    train = load_split(synthetic_sites / "site_0", split="train")
    test = load_split(synthetic_sites / "site_0", split="test")
    # Execute
    metrics = resnet_baseline(
        "resnet18", train, test, num_classes=7, epochs=1, batch_size=32, max_steps=2
    )
    # Assert
    assert 0.0 <= metrics["acc"] <= 1.0
    assert metrics["num_examples"] == len(test[1])
