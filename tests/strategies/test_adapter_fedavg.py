"""strategies/adapter_fedavg.py on fake Flower replies: screen, weight, record."""

from __future__ import annotations

import pytest
import torch
from flwr.app import Message
from safetensors.torch import load_file

from fedmed.wire import EVALUATE_FIRST, PRIOR, payload_bytes, record_to_state
from strategies.adapter_fedavg import AdapterFedAvg
from tests.strategies.conftest import (
    asks,
    error_reply,
    evaluate_reply,
    filled,
    update_reply,
)


def rows(run, phase):
    return [r for r in run.read_metrics() if r["phase"] == phase]


def test_malformed_and_failed_replies_are_left_out_with_their_reason(task, run):
    # Prepare: site 0 and 1 valid; 2 sends NaN, 3 a wrong shape, 4 no
    # examples, 5 crashed
    strategy = AdapterFedAvg(task, run, min_sites=2)
    ask = asks(strategy, 6)
    nan = filled(1.0)
    nan["bias"][0] = float("nan")
    wrong = {**filled(1.0), "bias": torch.zeros(3)}
    replies = [
        update_reply(ask[0], filled(1.0), 10),
        update_reply(ask[1], filled(3.0), 10),
        update_reply(ask[2], nan, 10),
        update_reply(ask[3], wrong, 10),
        update_reply(ask[4], filled(100.0), 0),
        error_reply(ask[5], "Traceback ...\nRuntimeError: site 5 ran out of memory"),
    ]
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    # Assert: only the valid updates are averaged; a site that crashed before
    # it ever named itself is known by its node id
    aggregate = record_to_state(arrays)
    for value in aggregate.values():
        torch.testing.assert_close(value, torch.full_like(value, 2.0))
    train = rows(run, "train")[-1]
    reasons = {r["site"]: r["reason"] for r in train["rejected"]}
    assert set(reasons) == {"2", "3", "4", "node-105"}
    assert "NaN or Inf" in reasons["2"] and "shape" in reasons["3"]
    assert "num-examples must be > 0" in reasons["4"]
    assert reasons["node-105"] == "RuntimeError: site 5 ran out of memory"
    assert (train["accepted"], train["status"]) == (2, "ok")
    assert set(train["sites"]) == {"0", "1"}


def test_updates_and_metrics_are_weighted_by_their_examples(task, run):
    # Prepare: 1 example at 0.0 and 3 examples at 4.0
    strategy = AdapterFedAvg(task, run, min_sites=2)
    ask = asks(strategy, 2)
    replies = [
        update_reply(ask[0], filled(0.0), 1, train_loss=2.0),
        update_reply(ask[1], filled(4.0), 3, train_loss=1.0),
    ]
    # Execute
    arrays, metrics = strategy.aggregate_train(1, replies)
    # Assert: (1 * 0 + 3 * 4) / 4 = 3, loss (2 + 3) / 4 = 1.25
    for value in record_to_state(arrays).values():
        torch.testing.assert_close(value, torch.full_like(value, 3.0))
    assert metrics["train_loss"] == pytest.approx(1.25)
    assert metrics["num-examples"] == 4.0
    aggregated = rows(run, "train")[-1]["aggregated"]
    assert aggregated == {"train_loss": 1.25, "num-examples": 4.0}


def test_every_round_is_checkpointed_and_recorded_with_its_bytes(task, run):
    # Prepare: a resumed run (offset 4), sites 0 and 1 reply, site 2 is silent
    strategy = AdapterFedAvg(task, run, min_sites=2, round_offset=4)
    ask = asks(strategy, 3)
    replies = [
        update_reply(ask[0], filled(1.0), 5, train_loss=0.5),
        update_reply(ask[1], filled(1.0), 5, train_loss=0.5),
    ]
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    # Assert: the checkpoint holds the aggregate, the row every figure
    saved = load_file(str(run.checkpoints / "round_5.safetensors"))
    for key, value in record_to_state(arrays).items():
        torch.testing.assert_close(saved[key], value)
    train = rows(run, "train")
    assert len(train) == 1 and train[0]["round"] == 5
    row = train[0]
    down = payload_bytes(ask[0].content)
    up = payload_bytes(replies[0].content)
    assert row["sites"]["0"] == {
        "train_loss": 0.5,
        "num-examples": 5.0,
        "bytes_up": up,
        "bytes_down": down,
    }
    assert (row["bytes_up"], row["bytes_down"]) == (2 * up, 3 * down)
    assert row["rejected"] == [{"site": "node-102", "reason": "no reply (timeout)"}]
    assert row["wall_s"] >= 0.0


def test_a_round_below_min_sites_is_recorded_as_skipped(task, run):
    # Prepare
    strategy = AdapterFedAvg(task, run, min_sites=2)
    ask = asks(strategy, 2)
    replies = [update_reply(ask[0], filled(1.0), 5), error_reply(ask[1], "boom")]
    # Execute
    out = strategy.aggregate_train(1, replies)
    # Assert
    assert out == (None, None)
    assert not (run.checkpoints / "round_1.safetensors").exists()
    row = rows(run, "train")[-1]
    assert (row["status"], row["accepted"], row["aggregated"]) == ("skipped", 1, {})
    assert row["rejected"] == [{"site": "node-101", "reason": "boom"}]


def test_evaluation_is_weighted_pooled_and_recorded(task, run):
    # Prepare: site 2 crashed; sites 0/1 send accuracy and correct/total counts
    strategy = AdapterFedAvg(task, run, min_sites=2)
    ask = asks(strategy, 3, phase="evaluate")
    replies = [
        evaluate_reply(ask[0], 10, counts=[9.0, 10.0], accuracy=0.9),
        evaluate_reply(ask[1], 30, counts=[15.0, 30.0], accuracy=0.5),
        error_reply(ask[2], "Traceback\nValueError: corrupt npz"),
    ]
    # Execute
    metrics = strategy.aggregate_evaluate(1, replies)
    # Assert: (10 * 0.9 + 30 * 0.5) / 40 = 0.6; pooled 24 / 40 = 0.6 as well
    assert metrics["accuracy"] == pytest.approx(0.6)
    assert metrics["pooled_accuracy"] == pytest.approx(24 / 40)
    row = rows(run, "evaluate")[-1]
    assert set(row["sites"]) == {"0", "1"} and row["sites"]["1"]["accuracy"] == 0.5
    assert row["rejected"] == [
        {"site": "node-102", "reason": "ValueError: corrupt npz"}
    ]
    assert row["aggregated"]["num-examples"] == 40.0


def test_bytes_sent_before_a_site_is_known_are_counted_under_its_name(task, run):
    # Prepare: the first round: the strategy knows nodes only by id
    strategy = AdapterFedAvg(task, run, min_sites=1)
    ask = asks(strategy, 1)
    # Execute
    strategy.aggregate_train(1, [update_reply(ask[0], filled(1.0), 3)])
    second = asks(strategy, 1, server_round=2)
    strategy.aggregate_train(2, [update_reply(second[0], filled(1.0), 3)])
    # Assert
    down = payload_bytes(ask[0].content)
    train = rows(run, "train")
    assert [row["round"] for row in train] == [1, 2]
    for row in train:
        assert set(row["sites"]) == {"0"}
        assert row["sites"]["0"]["bytes_down"] == row["bytes_down"] == down


def carried(ask, state, examples: int, tested: int, **evaluation) -> Message:
    """A train reply that also carries the evaluation of the model it received."""
    reply = update_reply(ask, state, examples)
    prior = evaluate_reply(ask, tested, **evaluation).content
    for key, record in prior.items():
        reply.content[PRIOR + key] = record
    return reply


def test_one_message_rounds_record_each_evaluation_under_its_own_round(task, run):
    # Prepare: 3 rounds, one message per round; round 2's train replies carry
    # the evaluation of round 1's aggregate (site 1 sends none, site 2 crashed)
    strategy = AdapterFedAvg(
        task, run, min_sites=1, evaluate_with_train=True, last_round=3
    )
    first = asks(strategy, 2)
    assert all(EVALUATE_FIRST not in m.content["config"] for m in first)
    strategy.aggregate_train(1, [update_reply(a, filled(1.0), 10) for a in first])
    assert asks(strategy, 2, phase="evaluate") == []
    assert strategy.aggregate_evaluate(1, []) is None
    second = asks(strategy, 3, server_round=2)
    assert all(m.content["config"][EVALUATE_FIRST] for m in second)
    replies = [
        carried(second[0], filled(2.0), 10, 10, counts=[9.0, 10.0], accuracy=0.9),
        update_reply(second[1], filled(4.0), 10),
        error_reply(second[2], "Traceback\nValueError: corrupt npz"),
    ]
    # Execute
    strategy.aggregate_train(2, replies)
    # Assert: round 1's evaluation row comes first, from site 0 only; the
    # bytes stay with the train row that carried them; both updates count
    evaluate, train = run.read_metrics()[-2:]
    assert (evaluate["round"], evaluate["phase"]) == (1, "evaluate")
    assert evaluate["carried_by"] == "train" and evaluate["bytes_up"] == 0
    assert evaluate["aggregated"]["accuracy"] == pytest.approx(0.9)
    assert evaluate["aggregated"]["pooled_accuracy"] == pytest.approx(0.9)
    assert set(evaluate["sites"]) == {"0"}
    reasons = {r["site"]: r["reason"] for r in evaluate["rejected"]}
    assert reasons == {
        "1": "reply carries no evaluation",
        "node-102": "ValueError: corrupt npz",
    }
    assert (train["round"], train["phase"], train["accepted"]) == (2, "train", 2)
    assert train["bytes_up"] == sum(payload_bytes(r.content) for r in replies[:2])
    # the last round evaluates in its own message, recorded as usual
    strategy.aggregate_train(
        3, [update_reply(a, filled(1.0), 10) for a in asks(strategy, 2, server_round=3)]
    )
    last = asks(strategy, 2, phase="evaluate", server_round=3)
    assert len(last) == 2 and all(
        EVALUATE_FIRST not in m.content.get("config", {}) for m in last
    )
    strategy.aggregate_evaluate(3, [evaluate_reply(a, 5, accuracy=0.5) for a in last])
    phases = [(r["round"], r["phase"]) for r in run.read_metrics()]
    assert phases == [
        (1, "train"),
        (1, "evaluate"),
        (2, "train"),
        (2, "evaluate"),
        (3, "train"),
        (3, "evaluate"),
    ]


def test_a_resumed_run_evaluates_the_checkpoint_it_never_evaluated(task, run):
    # Prepare: the run stopped after round 4's train row, before its evaluation
    run.record_round(4, "train", {})
    strategy = AdapterFedAvg(
        task, run, round_offset=4, evaluate_with_train=True, last_round=6
    )
    # Execute / Assert: the resumed run's first train message evaluates round 4
    assert all(m.content["config"][EVALUATE_FIRST] for m in asks(strategy, 2))
    run.record_round(4, "evaluate", {})
    again = AdapterFedAvg(
        task, run, round_offset=4, evaluate_with_train=True, last_round=6
    )
    assert all(EVALUATE_FIRST not in m.content["config"] for m in asks(again, 2))


def test_a_carried_evaluation_is_bounded_like_an_evaluate_reply(task, run):
    # Prepare: a dishonest site claims 1e18 test cases in the evaluation its
    # train reply carries, to own round 1's scores
    strategy = AdapterFedAvg(
        task, run, min_sites=1, evaluate_with_train=True, last_round=3
    )
    first = asks(strategy, 2)
    strategy.aggregate_train(1, [update_reply(a, filled(1.0), 10) for a in first])
    second = asks(strategy, 2, server_round=2)
    replies = [
        carried(second[0], filled(2.0), 10, 10, accuracy=0.9),
        carried(second[1], filled(2.0), 10, 10**18, accuracy=0.0),
    ]
    # Execute
    strategy.aggregate_train(2, replies)
    # Assert: its evaluation is refused with the rule it broke, its update
    # (a valid one) still counts
    evaluate, train = run.read_metrics()[-2:]
    assert evaluate["aggregated"]["accuracy"] == pytest.approx(0.9)
    assert [r["site"] for r in evaluate["rejected"]] == ["1"]
    assert "max-examples-per-site" in evaluate["rejected"][0]["reason"]
    assert train["accepted"] == 2
