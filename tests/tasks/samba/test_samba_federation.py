"""Two phantom sites, one federated round through the Task interface (no Flower)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import torch

import fedmed.tasks.samba  # noqa: F401  (registers "samba")
from fedmed.comm.aggregation import weighted_mean
from fedmed.tasks.registry import get_task

REPO = Path(__file__).resolve().parents[3]


def _tiny_run_config(data_dir: Path) -> dict:
    with open(REPO / "configs" / "samba_tiny.toml", "rb") as handle:
        config = tomllib.load(handle)
    # fewer voting epochs than the demo config: this test checks wiring, not accuracy
    return {**config, "data-dir": str(data_dir), "seed": 0, "samba.voting-epochs": 3}


def test_two_sites_one_round_writes_dice_per_region(phantoms, tmp_path):
    # Prepare
    task = get_task(_tiny_run_config(phantoms))
    sites = [task.site_data({"partition-id": k, "num-partitions": 2}) for k in (0, 1)]
    round_config = {"server-round": 1}
    # Execute: fit on both sites from the same global model, aggregate, evaluate
    states, weights, fit_metrics = [], [], []
    for data in sites:
        model = task.build_model()
        result = task.fit(model, data, round_config)
        states.append(task.exchanged(model))
        weights.append(result.num_examples)
        fit_metrics.append(result.metrics)
    aggregate = weighted_mean(states, weights)
    global_model = task.build_model()
    task.load_exchanged(global_model, aggregate)
    evaluations = [task.evaluate(global_model, data) for data in sites]
    plots = task.write_plots(global_model, tmp_path / "plots")
    # Assert
    assert [len(s.train) for s in sites] == [2, 2] and all(w > 0 for w in weights)
    assert all(np.isfinite(m["decoder_dice_loss"]) for m in fit_metrics)
    assert not torch.equal(
        states[0]["sam.mask_decoder.iou_token.weight"],
        states[1]["sam.mask_decoder.iou_token.weight"],
    )
    for name, value in task.exchanged(global_model).items():
        torch.testing.assert_close(value, aggregate[name])
    for metrics in [e.metrics for e in evaluations]:
        for region in ("et", "tc", "wt"):
            assert 0.0 <= metrics[f"finetuned_{region}_dice"] <= 1.0
            assert np.isfinite(metrics[f"finetuned_{region}_hd95"])
        assert metrics["finetuned_sam_dice"] > metrics["zero_shot_sam_dice"]
    assert [e.num_examples for e in evaluations] == [1, 1]
    assert len(plots) == 1 and plots[0].stat().st_size > 10_000


def test_pooled_baseline_unites_the_sites_cases(phantoms):
    # Prepare
    task = get_task(_tiny_run_config(phantoms))
    sites = [task.site_data({"partition-id": k, "num-partitions": 2}) for k in (0, 1)]
    # Execute
    pooled = task.pool(sites)
    # Assert
    names = {pooled.train[i].case_id for i in range(len(pooled.train))}
    assert len(names) == 4
    assert {c.naming for c in (pooled.train[i] for i in range(4))} == {"2021", "2023"}
    assert len(task.heldout_data()) == 2
