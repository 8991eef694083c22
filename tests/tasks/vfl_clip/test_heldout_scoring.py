"""A VFL run is scored on the held-out set, from its per-round checkpoints."""

from __future__ import annotations

import pytest

from fedmed.runs import RunDirectory
from fedmed.tasks.registry import get_task
from fedmed.tasks.vfl_clip.protocol import run_vfl_inprocess
from server.heldout import score_checkpoints_heldout

from .conftest import tiny_run_config


def test_every_round_and_the_initial_model_are_scored_on_heldout(
    synthetic_sites, tmp_path
):
    # Prepare: two rounds of VFL, checkpointed as the vertical strategy does
    task = get_task(tiny_run_config(synthetic_sites))
    providers = [
        task.image_provider({"partition-id": k, "num-partitions": 4}) for k in range(3)
    ]
    knowledge = task.knowledge_provider()
    run = RunDirectory(tmp_path / "run")
    run.create({})
    expected = [task.evaluate_heldout(knowledge.model, task.heldout_data())]
    for round_id in (1, 2):
        run_vfl_inprocess(task.cfg, knowledge, providers, rounds=1)
        run.save_checkpoint(round_id, task.exchanged(knowledge.model), {})
        expected.append(task.evaluate_heldout(knowledge.model, task.heldout_data()))
    # Execute
    score_checkpoints_heldout(task, run, 0, 2)
    # Assert
    rows = [r for r in run.read_metrics() if r["phase"] == "heldout"]
    assert [r["round"] for r in rows] == [0, 1, 2]
    for row, metrics in zip(rows, expected, strict=True):
        assert row["aggregated"] == pytest.approx(metrics, abs=1e-12)
    assert rows[0]["aggregated"]["auc"] != rows[2]["aggregated"]["auc"]
    assert task.always_secure_aggregation
