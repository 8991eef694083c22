"""A 2-site, 1-round SeLoRA federation through the Task interface (in process)."""

import pytest
import torch

from fedmed.comm.selection import UpdateRejected
from fedmed.tasks import get_task
from fedmed.tasks.selora.aggregation import delta_weight, lora_pairs, state_ranks
from fedmed.tasks.selora.plots import HEATMAP_NAME
from fedmed.tasks.selora.task import SeLoRATask  # noqa: F401  (registers "selora")
from tests.tasks.selora.conftest import tiny_run_config


def test_two_sites_one_round_grow_ranks_aggregate_and_plot(report_data, tmp_path):
    # Prepare
    task = get_task(tiny_run_config(report_data))
    sent = task.exchanged(task.build_model())
    sites = [task.site_data({"partition-id": k, "num-partitions": 2}) for k in range(2)]
    # Execute: each site fits from the same global state
    replies, results = [], []
    for data in sites:
        model = task.build_model()
        task.load_exchanged(model, sent)
        results.append(task.fit(model, data, {"server-round": 1}))
        reply = task.exchanged(model)
        task.validate_update(reply, sent)
        replies.append(reply)
    aggregate = task.aggregate(replies, [r.num_examples for r in results])
    global_model = task.build_model()
    task.load_exchanged(global_model, aggregate)
    evaluation = task.evaluate(global_model, sites[0])
    heldout = task.evaluate_heldout(global_model, task.heldout_data())
    heatmap = task.write_rank_heatmap(aggregate, tmp_path / "plots")
    # Assert
    assert all(r.metrics["expansions"] > 0 for r in results)
    assert all(state_ranks(r) != state_ranks(sent) for r in replies)
    grown = state_ranks(aggregate)
    assert grown == {
        layer: max(state_ranks(r)[layer] for r in replies) for layer in grown
    }
    assert task.exchanged(global_model).keys() == sent.keys()
    for key, value in task.exchanged(global_model).items():
        torch.testing.assert_close(value, aggregate[key])
    assert evaluation.num_examples > 0 and torch.isfinite(
        torch.tensor(evaluation.metrics["loss"])
    )
    assert heldout["loss"] > 0
    assert heatmap.name == HEATMAP_NAME and heatmap.stat().st_size > 5000


def test_validate_update_rejects_nan_and_inconsistent_factor_shapes(report_data):
    task = get_task(tiny_run_config(report_data))
    sent = task.exchanged(task.build_model())
    a_key, b_key = next(iter(lora_pairs(sent).values()))
    rank = sent[a_key].shape[0]
    grown = {
        **sent,
        a_key: torch.randn(rank + 1, sent[a_key].shape[1]),
        b_key: torch.zeros(sent[b_key].shape[0], rank + 1),
    }
    task.validate_update(grown, sent)
    with pytest.raises(UpdateRejected, match="NaN"):
        task.validate_update(
            {**grown, b_key: torch.full_like(grown[b_key], float("nan"))}, sent
        )
    with pytest.raises(UpdateRejected, match="rank"):
        task.validate_update(
            {**grown, b_key: torch.zeros(sent[b_key].shape[0], rank + 2)}, sent
        )
    with pytest.raises(UpdateRejected):
        task.validate_update({**grown, "unet.extra.weight": torch.zeros(2)}, sent)


def test_load_exchanged_accepts_smaller_ranks_and_keeps_model_on_rejection(report_data):
    task = get_task(tiny_run_config(report_data, aggregate_rank="energy", energy=0.5))
    model = task.build_model()
    sent = task.exchanged(model)
    a_key, b_key = next(iter(lora_pairs(sent).values()))
    big = {
        **sent,
        a_key: torch.randn(3, sent[a_key].shape[1]),
        b_key: torch.randn(sent[b_key].shape[0], 3),
    }
    task.load_exchanged(model, big)
    before = task.exchanged(model)
    with pytest.raises(UpdateRejected):
        task.load_exchanged(
            model, {**big, a_key: torch.full_like(big[a_key], float("inf"))}
        )
    after = task.exchanged(model)
    assert after[a_key].shape == (3, sent[a_key].shape[1])
    torch.testing.assert_close(after[a_key], before[a_key])
    layer = a_key.removesuffix(".lora_A.default.weight")
    shrunk = task.aggregate([big], [1.0])
    task.load_exchanged(model, shrunk)
    assert state_ranks(task.exchanged(model))[layer] <= 3
    torch.testing.assert_close(
        delta_weight(task.exchanged(model), layer), delta_weight(shrunk, layer)
    )


@pytest.mark.parametrize("method", ["lora", "dylora", "adalora"])
def test_baselines_fit_and_aggregate_through_the_same_task(report_data, method):
    task = get_task(tiny_run_config(report_data, method=method, max_steps=2))
    sent = task.exchanged(task.build_model())
    data = task.site_data({"partition-id": 0, "num-partitions": 2})
    model = task.build_model()
    result = task.fit(model, data, {"server-round": 1})
    reply = task.exchanged(model)
    task.validate_update(reply, sent)
    aggregate = task.aggregate([reply, sent], [1.0, 1.0])
    task.load_exchanged(model, aggregate)
    assert result.metrics["steps"] == 2 and result.metrics["expansions"] == 0
    assert {k: v.shape for k, v in aggregate.items()} == {
        k: v.shape for k, v in sent.items()
    }
    key = next(k for k in reply if "lora_A" in k)
    with pytest.raises(UpdateRejected):  # fixed-rank methods never change shape
        task.validate_update(
            {**reply, key: torch.cat([reply[key], reply[key][:1]])}, sent
        )
