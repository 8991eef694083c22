"""A 2-site, 1-round SeLoRA federation through the Task interface (in process)."""

import pytest
import torch

from fedmed.comm.selection import UpdateRejected
from fedmed.tasks import get_task
from fedmed.tasks.selora.aggregation import delta_weight, lora_pairs, state_ranks
from fedmed.tasks.selora.fisher import FisherProbe
from fedmed.tasks.selora.layer import kaiming_row, lora_layers
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
    before = task.aggregation_report()
    aggregate = task.aggregate(replies, [r.num_examples for r in results])
    report = task.aggregation_report()
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
    # the report is the dropped share of the exact mean update, checked densely
    weights = [r.num_examples / sum(x.num_examples for x in results) for r in results]
    dropped, total = 0.0, 0.0
    for layer in grown:
        mean = sum(
            w * delta_weight(r, layer) for r, w in zip(replies, weights, strict=True)
        )
        dropped += float((delta_weight(aggregate, layer) - mean).pow(2).sum())
        total += float(mean.pow(2).sum())
    assert before == {}
    assert report["aggregation_rel_error"] == pytest.approx((dropped / total) ** 0.5)
    assert 0.0 < report["aggregation_rel_error"] < 0.5
    assert report["aggregate_mean_rank"] == pytest.approx(
        sum(grown.values()) / len(grown)
    )


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


def grown_update(sent: dict, seed: int) -> dict:
    """A site reply with ranks 1..3 of full rank and a Kaiming-scale A, as after fit."""
    generator = torch.Generator().manual_seed(seed)
    state = dict(sent)
    for i, (a_key, b_key) in enumerate(sorted(lora_pairs(sent).values())):
        rank, d_in = 1 + i % 3, sent[a_key].shape[1]
        state[a_key] = torch.randn(rank, d_in, generator=generator) / d_in**0.5
        state[b_key] = 0.02 * torch.randn(
            sent[b_key].shape[0], rank, generator=generator
        )
    return state


def rescaled(state: dict, scale: float) -> dict:
    """The same ΔW per layer written as (A * scale, B / scale)."""
    out = dict(state)
    for a_key, b_key in lora_pairs(state).values():
        out[a_key], out[b_key] = state[a_key] * scale, state[b_key] / scale
    return out


def fi_ratios(task, state: dict, data) -> dict[str, float]:
    """FI-Ratio of every layer at an expansion check on one fixed batch."""
    model = task.build_model()
    task.load_exchanged(model, state)
    layers = lora_layers(model)
    generator = torch.Generator().manual_seed(7)
    candidates = {
        n: kaiming_row(layer.in_features, generator) for n, layer in layers.items()
    }
    pixels, reports = zip(*(data.train[i] for i in range(4)), strict=True)
    batch = model.prepare(
        torch.stack(pixels), list(reports), torch.Generator().manual_seed(1)
    )
    with FisherProbe(layers, candidates) as probe:
        model.loss(batch).backward()
    return {name: scores.ratio for name, scores in probe.scores(batch.size).items()}


def test_aggregation_does_not_steer_which_layers_grow(report_data):
    # Prepare: two site replies of the same ΔW, factorised three ways
    task = get_task(tiny_run_config(report_data))
    sent = task.exchanged(task.build_model())
    data = task.site_data({"partition-id": 0, "num-partitions": 2})
    replies = [grown_update(sent, seed=1), grown_update(sent, seed=2)]
    threshold = task.cfg.expand_threshold
    # Execute
    own = fi_ratios(task, replies[0], data)
    alone = fi_ratios(task, task.aggregate([replies[0]], [1.0]), data)
    merged = {
        scale: fi_ratios(
            task,
            task.aggregate([rescaled(r, scale) for r in replies], [3.0, 5.0]),
            data,
        )
        for scale in (0.1, 1.0, 10.0)
    }
    # Assert: aggregating one site's update leaves its decisions as they were
    assert alone == pytest.approx(own, rel=1e-3)
    grown_alone = {n for n, r in alone.items() if r >= threshold}
    assert grown_alone == {n for n, r in own.items() if r >= threshold}
    # ... and the sites' split of ΔW does not change the aggregate's decisions
    for ratios in merged.values():
        assert ratios == pytest.approx(merged[1.0], rel=1e-3)
    assert 0 < len(grown_alone) < len(own)  # the rule discriminates between layers
