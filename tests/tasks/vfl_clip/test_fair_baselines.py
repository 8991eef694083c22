"""The local and pooled baselines of a VFL run compare like with like.

Same data (the image providers' only, never the knowledge provider's
partition), same budget (one Adam step per round on the samples a VFL round
sums over, one optimiser for the run), same held-out test set and the same
metric names as the federated model's held-out scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import fedmed.tasks.vfl_clip.task as task_module
from fedmed.baselines import run_baselines
from fedmed.data.synth_dermamnist import synthesize
from fedmed.runs import RunDirectory
from fedmed.tasks.registry import get_task
from fedmed.tasks.vfl_clip.protocol import run_vfl_inprocess
from fedmed.tasks.vfl_clip.train import batch_indices, batch_seed, centralised_step

from .conftest import tiny_run_config

ROUNDS = 4


@pytest.fixture(scope="module")
def four_sites(tmp_path_factory) -> Path:
    """Synthetic DermaMNIST for 4 nodes: site_3 is the knowledge provider's."""
    root = tmp_path_factory.mktemp("vfl_four_sites")
    synthesize(root, num_sites=4, size=28, seed=1, samples_per_site=150)
    return root


@pytest.fixture
def counted_steps(monkeypatch) -> list[int]:
    """Batch sizes of every centralised Adam step the task takes."""
    sizes: list[int] = []

    def counting_step(model, optimizer, embeddings, labels):
        sizes.append(int(labels.numel()))
        return centralised_step(model, optimizer, embeddings, labels)

    monkeypatch.setattr(task_module, "centralised_step", counting_step)
    return sizes


def vfl_heldout(task, num_sites: int, rounds: int) -> dict[str, float]:
    """Held-out metrics of the in-process VFL model (3 providers + 1 knowledge)."""
    nodes = [{"partition-id": k, "num-partitions": num_sites} for k in range(3)]
    providers = [task.image_provider(node) for node in nodes]
    knowledge = task.knowledge_provider()
    run_vfl_inprocess(task.cfg, knowledge, providers, rounds, seed=task.seed)
    return task.evaluate_heldout(knowledge.model, task.heldout_data())


@pytest.mark.parametrize("batch_size", [0, 64])
def test_pooled_baseline_has_the_vfl_budget_data_and_names(
    four_sites, tmp_path, counted_steps, batch_size
):
    # Prepare: 4 nodes = 3 image providers + the knowledge provider (partition 3)
    task = get_task(tiny_run_config(four_sites, batch_size=batch_size))
    run = RunDirectory(tmp_path / "run")
    run.create({})
    providers = [
        task.image_provider({"partition-id": k, "num-partitions": 4}) for k in range(3)
    ]
    train_sizes = [len(p.train) for p in providers]
    per_round = [
        sum(
            len(batch_indices(n, batch_size, batch_seed(task.seed, r)))
            for n in train_sizes
        )
        for r in range(1, ROUNDS + 1)
    ]
    # Execute
    finals = run_baselines(task, num_sites=4, rounds=ROUNDS, run=run)
    federated = vfl_heldout(task, num_sites=4, rounds=ROUNDS)
    # Assert: local = 3 providers x ROUNDS steps, then pooled = ROUNDS steps,
    # each on exactly the samples one VFL round sums over
    local_steps, pooled_steps = counted_steps[:-ROUNDS], counted_steps[-ROUNDS:]
    assert len(local_steps) == 3 * ROUNDS
    assert pooled_steps == per_round
    assert sum(local_steps) == sum(per_round)
    # same names, same test set (held-out), same numbers as the VFL model
    assert set(finals["pooled"]) == set(federated)
    assert finals["pooled"]["num_examples"] == federated["num_examples"]
    for name, value in federated.items():
        assert finals["pooled"][name] == pytest.approx(value, abs=1e-3), name


def test_fit_keeps_one_adam_across_rounds(synthetic_sites):
    # Prepare: two fit() rounds must equal two steps of one optimiser
    task = get_task(tiny_run_config(synthetic_sites))
    data = task.site_data({"partition-id": 0, "num-partitions": 3})
    model, reference = task.build_model(), task.build_model()
    optimizer = torch.optim.Adam([reference.prompt_learner.ctx], lr=task.cfg.lr)
    embeddings, labels = data.train.tensors()
    # Execute
    for server_round in (1, 2):
        task.fit(model, data, {"server-round": server_round})
        centralised_step(reference, optimizer, embeddings, labels)
    # Assert
    torch.testing.assert_close(
        model.prompt_learner.ctx, reference.prompt_learner.ctx, rtol=0, atol=1e-7
    )
    assert not np.allclose(
        model.prompt_learner.ctx.detach().numpy(),
        task.build_model().prompt_learner.ctx.detach().numpy(),
    )
