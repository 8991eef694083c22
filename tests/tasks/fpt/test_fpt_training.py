"""FPT learns through the Task interface: locally and over federated rounds."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from fedmed.comm.aggregation import weighted_mean
from fedmed.tasks.registry import get_task


def _num_sites(data_dir) -> int:
    return len(list(data_dir.glob("site_*")))


class WithoutFrozenFeatures(Dataset):
    """A cached FPT split with the frozen K/V zeroed: the side network alone."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.dataset[index])
        sample["keys"] = torch.zeros_like(sample["keys"])
        sample["values"] = torch.zeros_like(sample["values"])
        return sample


def _pooled_fit(task, data_dir, wrap=lambda d: d):
    num_sites = _num_sites(data_dir)
    pooled = task.pool(
        [
            task.site_data({"partition-id": k, "num-partitions": num_sites})
            for k in range(num_sites)
        ]
    )
    pooled.train = wrap(pooled.train)
    model = task.build_model()
    heldout = wrap(task.heldout_data())
    before = task.evaluate_heldout(model, heldout)["auc"]
    result = task.fit(model, pooled, {"server-round": 1})
    after = task.evaluate_heldout(model, heldout)["auc"]
    return before, after, result, len(pooled.train)


def test_local_training_improves_heldout_auc(fpt_sites, tiny_run_config):
    # Prepare: the pooled ("centralised") data of all sites, one local fit
    task = get_task(tiny_run_config(fpt_sites, local_epochs=6))
    # Execute
    before, after, result, num_train = _pooled_fit(task, fpt_sites)
    # Assert
    assert result.num_examples == num_train
    assert after >= before + 0.1, (before, after)
    assert after >= 0.75, (before, after)


def test_low_resolution_side_network_alone_cannot_learn_the_label(
    fpt_sites, tiny_run_config
):
    # Prepare: same training, but the fine detail from the frozen model is removed
    task = get_task(tiny_run_config(fpt_sites, local_epochs=6))
    # Execute
    _, after, _, _ = _pooled_fit(task, fpt_sites, WithoutFrozenFeatures)
    # Assert: the 32-px side input carries (almost) no label information
    assert after < 0.65


def test_federated_rounds_raise_auc(fpt_sites, tiny_run_config):
    # Prepare
    task = get_task({**tiny_run_config(fpt_sites), "num-server-rounds": 2})
    global_model = task.build_model()
    num_sites = _num_sites(fpt_sites)
    sites = [
        task.site_data({"partition-id": k, "num-partitions": num_sites})
        for k in range(num_sites)
    ]
    heldout = task.heldout_data()
    aucs = [task.evaluate_heldout(global_model, heldout)["auc"]]
    # Execute
    for server_round in (1, 2):
        aggregate = task.exchanged(global_model)
        states, weights = [], []
        for site in sites:
            local = task.build_model()
            task.load_exchanged(local, aggregate)
            result = task.fit(local, site, {"server-round": server_round})
            states.append(task.exchanged(local))
            weights.append(result.num_examples)
        task.load_exchanged(global_model, weighted_mean(states, weights))
        aucs.append(task.evaluate_heldout(global_model, heldout)["auc"])
    # Assert
    assert aucs[2] >= aucs[0] + 0.1, aucs
    assert min(aucs[1:]) >= 0.7, aucs
    evaluation = task.evaluate(global_model, sites[0])
    assert evaluation.num_examples == len(sites[0].test)
    assert 0.0 <= evaluation.metrics["auc"] <= 1.0
    assert sum(evaluation.statistics["correct_total"][1:]) == len(sites[0].test)


@pytest.mark.parametrize("method", ["linear", "bitfit"])
def test_baseline_fit_changes_only_its_trainable_tensors(
    method, fpt_sites, tiny_run_config
):
    # Prepare
    task = get_task(tiny_run_config(fpt_sites, method=method, max_steps_per_round=2))
    model = task.build_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = set(task.exchanged(model))
    site = task.site_data({"partition-id": 1, "num-partitions": _num_sites(fpt_sites)})
    # Execute
    result = task.fit(model, site, {"server-round": 1})
    # Assert
    assert result.metrics["steps"] == 2
    changed = {n for n, p in model.named_parameters() if not p.equal(before[n])}
    assert changed and changed <= trainable
