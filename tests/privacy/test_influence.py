"""A dishonest site against plain FedAvg and DP: it can neither set the model nor
stop the run (bounded influence, issue "privacy that holds").

Each attack plays a real ``Strategy.start`` run over scripted sites
(:mod:`tests.privacy.scripted_sites`): two honest sites move the model by +1
and +3 with 10 examples each, so the honest aggregate moves it by exactly +2;
the attacker lies in a field its ClientApp controls.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from clients.faults import fault_mod
from fedmed.config import ConfigError, PlatformConfig
from fedmed.privacy.dp import clip_update, update_norm
from fedmed.wire import (
    METRICS,
    NUM_EXAMPLES,
    SITE_ID,
    metric_record,
    record_to_state,
    state_to_record,
)
from strategies.adapter_fedavg import AdapterFedAvg
from strategies.dp import AdapterDPFixedClipping
from tests.privacy.scripted_sites import (
    ScriptedGrid,
    filled_like,
    honest,
    lying,
    received_state,
    unchanged,
)
from tests.strategies.conftest import (  # noqa: F401 - fixtures
    PairTask,
    _inside_serverapp,
    reference_state,
    run,
    task,
)

NODE = 100


def start(strategy, grid: ScriptedGrid, rounds: int = 2):
    """Run ``rounds`` rounds; the final global state."""
    initial = state_to_record(reference_state(), "fp32")
    result = strategy.start(grid, initial, num_rounds=rounds, timeout=5.0)
    return record_to_state(result.arrays)


def rows(run, phase):  # noqa: F811 - the fixture
    return [r for r in run.read_metrics() if r["phase"] == phase]


def attacked(attacker) -> ScriptedGrid:
    return ScriptedGrid(
        {NODE: honest(0, 1.0), NODE + 1: honest(1, 3.0), NODE + 2: attacker}
    )


@pytest.mark.parametrize(
    ("claim", "reason"),
    [
        (float("inf"), "num-examples is not finite"),
        (float("nan"), "num-examples is not finite"),
        (1e18, "num-examples above max-examples-per-site (1000000)"),
        (-1.0, ("num-examples must be > 0", "num-examples must be >= 0")),
        (2.5, "num-examples is not an integer"),
    ],
    ids=["inf", "nan", "1e18", "negative", "fractional"],
)
def test_a_bad_example_count_is_refused_named_and_the_run_continues(
    task,  # noqa: F811
    run,  # noqa: F811
    claim,
    reason,
):
    # Prepare: site 2 claims ``claim`` examples in every train and evaluate reply
    strategy = AdapterFedAvg(task, run, min_sites=2)
    grid = attacked(lying(2, claim))
    # Execute: two full rounds (train + evaluate)
    final = start(strategy, grid)
    # Assert: both rounds aggregated the honest sites only (+2 per round)
    for value in final.values():
        torch.testing.assert_close(value, torch.full_like(value, 4.0))
    reasons = reason if isinstance(reason, tuple) else (reason, reason)
    for phase, expected in zip(("train", "evaluate"), reasons, strict=True):
        for row in rows(run, phase):
            assert row["rejected"] == [{"site": "2", "reason": expected}]
            assert set(row["sites"]) == {"0", "1"}
    assert [r["status"] for r in rows(run, "train")] == ["ok", "ok"]
    assert rows(run, "evaluate")[-1]["aggregated"][NUM_EXAMPLES] == 20.0
    network = run.network.summary()
    assert (network["train"]["rejected"], network["train"]["failed"]) == (2, 0)


def test_an_update_of_norm_1e30_is_refused_and_named(task, run):  # noqa: F811
    # Prepare: site 2 sends every value 1e30 / sqrt(8): norm 1e30
    strategy = AdapterFedAvg(task, run, min_sites=2)
    huge = 1e30 / math.sqrt(8)
    grid = attacked(lying(2, 10, lambda received: filled_like(received, huge)))
    # Execute
    final = start(strategy, grid, rounds=1)
    # Assert
    assert update_norm(filled_like(reference_state(), huge), reference_state()) == (
        pytest.approx(1e30, rel=1e-6)
    )
    for value in final.values():
        torch.testing.assert_close(value, torch.full_like(value, 2.0))
    [row] = rows(run, "train")
    assert row["rejected"][0]["site"] == "2" and row["accepted"] == 2
    assert "update overflows float32" in row["rejected"][0]["reason"]


def test_nan_weights_are_refused_and_named(task, run):  # noqa: F811
    # Prepare
    strategy = AdapterFedAvg(task, run, min_sites=2)

    def poisoned(received):
        state = {k: v + 1 for k, v in received.items()}
        state["bias"][1] = float("nan")
        return state

    # Execute
    final = start(strategy, attacked(lying(2, 10, poisoned)), rounds=1)
    # Assert
    torch.testing.assert_close(final["bias"], torch.full((2,), 2.0))
    [row] = rows(run, "train")
    assert [r["site"] for r in row["rejected"]] == ["2"]
    assert "NaN or Inf" in row["rejected"][0]["reason"]


def test_values_beyond_float32_on_the_wire_are_refused(task, run):  # noqa: F811
    # Prepare: site 2 sends float64 arrays of 1e300, whose float32 cast is inf
    strategy = AdapterFedAvg(task, run, min_sites=2)
    sites = attacked(lying(2, 10))
    honest_answer = sites.sites[NODE + 2]

    def float64_site(msg):
        answer = honest_answer(msg)
        if "arrays" in answer.content:
            shapes = {k: v.shape for k, v in received_state(msg).items()}
            answer.content["arrays"] = ArrayRecord(
                {k: Array(np.full(s, 1e300)) for k, s in shapes.items()}
            )
        return answer

    sites.sites[NODE + 2] = float64_site
    # Execute
    with np.errstate(over="ignore"):
        final = start(strategy, sites, rounds=1)
    # Assert
    torch.testing.assert_close(final["weight"], torch.full((2, 3), 2.0))
    [row] = rows(run, "train")
    assert [r["site"] for r in row["rejected"]] == ["2"]
    assert "NaN or Inf" in row["rejected"][0]["reason"]


def test_a_weighted_contribution_beyond_float32_is_refused(task, run):  # noqa: F811
    # Prepare: a cap so loose that 1e20 examples pass it; one value of 1e19
    # (squared norm 1e38, within float32) times 1e20 examples is 1e39, beyond
    # float32's 3.4e38
    strategy = AdapterFedAvg(task, run, min_sites=2, max_examples=10**30)

    def spike(received):
        state = filled_like(received, 0.0)
        state["weight"][0, 0] = 1e19
        return state

    grid = attacked(lying(2, 1e20, spike))
    # Execute
    final = start(strategy, grid, rounds=1)
    # Assert
    torch.testing.assert_close(final["bias"], torch.full((2,), 2.0))
    [row] = rows(run, "train")
    assert [r["site"] for r in row["rejected"]] == ["2"]
    assert "num-examples times its largest value" in row["rejected"][0]["reason"]


def test_max_update_norm_clips_each_update_and_records_it(task, run):  # noqa: F811
    # Prepare: bound 1.0; honest updates +1 / +3 per value (norm sqrt(8) and
    # 3 sqrt(8)); site 2 moves every value by 1000 with 10 examples
    strategy = AdapterFedAvg(task, run, min_sites=2, max_update_norm=1.0)
    grid = attacked(lying(2, 10, lambda received: filled_like(received, 1000.0)))
    # Execute
    final = start(strategy, grid, rounds=1)
    # Assert: every update was scaled to norm 1, i.e. +1/sqrt(8) per value,
    # so the mean of the three moves the model by 1/sqrt(8), not by ~335
    expected = 1 / math.sqrt(8)
    for value in final.values():
        torch.testing.assert_close(value, torch.full_like(value, expected))
    [row] = rows(run, "train")
    norms = {site: row["sites"][site]["update_norm"] for site in ("0", "1", "2")}
    assert norms["0"] == pytest.approx(math.sqrt(8))
    assert norms["2"] == pytest.approx(1000 * math.sqrt(8))
    assert {s: row["sites"][s]["clipped"] for s in norms} == {"0": 1, "1": 1, "2": 1}


def test_an_update_within_max_update_norm_is_left_as_it_is(task, run):  # noqa: F811
    # Prepare: bound 10 above both honest norms (2.83, 8.49)
    strategy = AdapterFedAvg(task, run, min_sites=2, max_update_norm=10.0)
    grid = ScriptedGrid({NODE: honest(0, 1.0), NODE + 1: honest(1, 3.0)})
    # Execute
    final = start(strategy, grid, rounds=1)
    # Assert
    torch.testing.assert_close(final["weight"], torch.full((2, 3), 2.0))
    [row] = rows(run, "train")
    assert row["sites"]["1"]["clipped"] == 0


def test_max_update_norm_is_refused_for_a_task_that_does_not_average(run):  # noqa: F811
    # Prepare
    class Reshaping(PairTask):
        aggregation = "custom"

    # Execute / Assert
    with pytest.raises(ConfigError, match="max-update-norm"):
        AdapterFedAvg(Reshaping(None, PlatformConfig()), run, max_update_norm=1.0)


def test_dp_survives_a_zero_norm_update(task, run):  # noqa: F811
    # Prepare: site 2 returns the model it received (update w_i - w = 0)
    inner = AdapterFedAvg(task, run, min_sites=2)
    strategy = AdapterDPFixedClipping(inner, noise_multiplier=0.0, clip_norm=1.0)
    grid = ScriptedGrid(
        {NODE: honest(0, 1.0), NODE + 1: honest(1, 3.0), NODE + 2: unchanged(2)}
    )
    # Execute
    final = start(strategy, grid)
    # Assert: both rounds released; each round adds the uniform mean of the
    # clipped updates (norm 1 each, the zero one stays zero): 2/3 / sqrt(8)
    train = rows(run, "train")
    assert [(r["status"], r["accepted"], r["rejected"]) for r in train] == [
        ("ok", 3, []),
        ("ok", 3, []),
    ]
    step = 2 / 3 / math.sqrt(8)
    for value in final.values():
        torch.testing.assert_close(value, torch.full_like(value, 2 * step))


def test_clipping_a_zero_update_returns_it_unchanged():
    # Prepare
    reference = reference_state()
    # Execute
    clipped = clip_update(reference, reference, 1.0)
    # Assert
    for key, value in clipped.items():
        assert torch.equal(value, reference[key])


def test_screening_survives_a_reply_with_a_text_example_count(task, run):  # noqa: F811
    # Prepare: a reply whose num-examples is a list (a MetricRecord allows it)
    strategy = AdapterFedAvg(task, run, min_sites=1)

    def listing(msg):
        content = RecordDict(
            {
                "arrays": state_to_record(received_state(msg), "fp32"),
                METRICS: metric_record({NUM_EXAMPLES: [1.0, 2.0], SITE_ID: 1}),
                "config": ConfigRecord({"note": "x"}),
            }
        )
        return Message(content, reply_to=msg)

    grid = ScriptedGrid({NODE: honest(0, 1.0), NODE + 1: listing})
    # Execute
    start(strategy, grid, rounds=1)
    # Assert
    [row] = rows(run, "train")
    assert row["rejected"] == [{"site": "1", "reason": "num-examples is not a number"}]


def test_the_examples_fault_makes_a_real_client_reply_claim_1e18():
    # Prepare: the ClientApp's fault mod, scripted for site 2 in round 1
    context = Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": 2},
        state=RecordDict(),
        run_config={"faults": "examples@2:1"},
    )
    ask = Message(
        RecordDict({"config": ConfigRecord({"server-round": 1})}),
        dst_node_id=7,
        message_type="train",
    )

    def train(msg, ctx):
        metrics = metric_record({NUM_EXAMPLES: 40, SITE_ID: 2})
        return Message(RecordDict({METRICS: metrics}), reply_to=msg)

    # Execute
    reply = fault_mod(ask, context, train)
    # Assert
    assert reply.content[METRICS][NUM_EXAMPLES] == 1e18


def test_statistics_that_do_not_combine_cost_the_pooled_metrics_not_the_run(
    task,  # noqa: F811
    run,  # noqa: F811
):
    # Prepare: site 1's evaluation statistics lack the task's "counts"
    strategy = AdapterFedAvg(task, run, min_sites=2)
    answer = honest(1, 3.0)

    def odd_statistics(msg):
        reply = answer(msg)
        if "statistics" in reply.content:
            reply.content["statistics"] = metric_record({"other": [1.0]})
        return reply

    grid = ScriptedGrid({NODE: honest(0, 1.0), NODE + 1: odd_statistics})
    # Execute
    final = start(strategy, grid)
    # Assert: both rounds ran; the evaluation row has its means, no pooled ones
    torch.testing.assert_close(final["bias"], torch.full((2,), 4.0))
    evaluate = rows(run, "evaluate")
    assert len(evaluate) == 2
    assert evaluate[-1]["aggregated"]["accuracy"] == 0.5
    assert "pooled_accuracy" not in evaluate[-1]["aggregated"]


def test_the_unchanged_fault_sends_back_the_model_received():
    # Prepare
    context = Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": 0},
        state=RecordDict(),
        run_config={"faults": "unchanged@0:*"},
    )
    sent = state_to_record(reference_state(), "fp32")
    ask = Message(
        RecordDict({"arrays": sent, "config": ConfigRecord({"server-round": 3})}),
        dst_node_id=7,
        message_type="train",
    )

    def train(msg, ctx):
        trained = state_to_record(filled_like(reference_state(), 5.0), "fp32")
        metrics = metric_record({NUM_EXAMPLES: 4, SITE_ID: 0})
        return Message(RecordDict({"arrays": trained, METRICS: metrics}), reply_to=msg)

    # Execute
    reply = fault_mod(ask, context, train)
    # Assert: the update w_i - w is zero
    assert update_norm(received_state(reply), reference_state()) == 0.0
