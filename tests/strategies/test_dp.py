"""strategies/dp.py: central DP composed around AdapterFedAvg, on fake replies."""

import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from fedmed.config import ConfigError, PlatformConfig, parse_platform
from fedmed.privacy.accountant import epsilon_after
from fedmed.privacy.dp import update_norm
from fedmed.tasks import list_tasks
from fedmed.wire import (
    ARRAYS,
    EVALUATE_FIRST,
    METRICS,
    NUM_EXAMPLES,
    PRIOR,
    metric_record,
    record_to_state,
    state_to_record,
)
from server.server_app import horizontal_strategy
from strategies.adapter_fedavg import AdapterFedAvg
from strategies.dp import (
    EPSILON_KEY,
    AdapterDPFixedClipping,
    check_differential_privacy,
)
from tests.strategies.conftest import PairTask, asks, site_of, update_reply


class WideTask(PairTask):
    """Enough exchanged values (2,080) to measure the noise's spread."""

    def build_model(self) -> nn.Module:
        return nn.Linear(64, 32)


@pytest.fixture
def wrapped(run):
    task = WideTask(None, PlatformConfig())
    return task, run, AdapterFedAvg(task, run, min_sites=1)


def test_updates_are_screened_clipped_noised_and_accounted(wrapped):
    # Prepare: two valid updates far outside the clip norm, one NaN update
    task, run, inner = wrapped
    strategy = AdapterDPFixedClipping(inner, noise_multiplier=1.0, clip_norm=0.01)
    reference = task.exchanged(task.build_model())
    ask = asks(strategy, 3, arrays=state_to_record(reference, "fp32"))
    shifted = {k: v + 1.0 for k, v in reference.items()}
    poisoned = {k: v.clone() for k, v in shifted.items()}
    poisoned["bias"][0] = float("nan")
    replies = [
        update_reply(ask[0], shifted, 10, train_loss=1.0),
        update_reply(ask[1], shifted, 500, train_loss=3.0),
        update_reply(ask[2], poisoned, 10, train_loss=9.0),
    ]
    # Execute
    out, metrics = strategy.aggregate_train(1, replies)
    # Assert: what was released is the clipped mean plus noise of std sigma*C/m
    aggregate = record_to_state(out)
    size = sum(v.numel() for v in reference.values())
    expected_noise = 0.01 / 2 * math.sqrt(size)  # std sigma*C/m per element, m = 2
    assert update_norm(aggregate, reference) == pytest.approx(expected_noise, rel=0.15)
    assert update_norm(shifted, reference) > 100 * expected_noise
    assert metrics[EPSILON_KEY] == pytest.approx(epsilon_after(1.0, 1, 1e-5))
    saved = load_file(str(run.checkpoints / "round_1.safetensors"))
    for key, value in aggregate.items():
        torch.testing.assert_close(saved[key], value)
    # Assert: uniform weights, the NaN update recorded as rejected
    train = [r for r in run.read_metrics() if r["phase"] == "train"][-1]
    assert train["accepted"] == 2 and len(train["rejected"]) == 1
    assert "NaN or Inf" in train["rejected"][0]["reason"]
    assert train["aggregated"]["train_loss"] == pytest.approx(2.0)  # not 2.96
    assert train["aggregated"][EPSILON_KEY] == metrics[EPSILON_KEY]
    assert train["sites"]["1"][NUM_EXAMPLES] == 500.0  # what the site reported


def test_the_wrapper_changes_neither_the_replies_nor_the_inner_strategy(wrapped):
    # Prepare
    task, _, inner = wrapped
    strategy = AdapterDPFixedClipping(inner, noise_multiplier=1.0, clip_norm=0.5)
    reference = task.exchanged(task.build_model())
    ask = asks(strategy, 2, arrays=state_to_record(reference, "fp32"))
    shifted = {k: v + 1.0 for k, v in reference.items()}
    replies = [update_reply(a, shifted, 7 + k) for k, a in enumerate(ask)]
    before = [record_to_state(r.content[ARRAYS]) for r in replies]
    settings = dict(vars(inner))
    # Execute
    strategy.aggregate_train(1, replies)
    # Assert
    for reply, state, examples in zip(replies, before, (7, 8), strict=True):
        assert reply.content[METRICS][NUM_EXAMPLES] == examples
        for key, value in record_to_state(reply.content[ARRAYS]).items():
            torch.testing.assert_close(value, state[key])
    assert set(vars(inner)) == set(settings)  # no flag set from outside
    assert inner.codec == "fp32" and inner.min_sites == 1


@pytest.mark.parametrize("codec", ["int8", "fp16"])
def test_wire_codecs_other_than_fp32_are_refused_as_by_the_platform(wrapped, codec):
    task, run, _ = wrapped
    inner = AdapterFedAvg(task, run, codec=codec, min_sites=1)
    with pytest.raises(ValueError, match=f"needs comm-dtype fp32, found {codec}"):
        AdapterDPFixedClipping(inner, noise_multiplier=1.0, clip_norm=1.0)
    with pytest.raises(ConfigError, match="comm-dtype=fp32"):
        parse_platform({"differential-privacy": True, "comm-dtype": codec})


def test_resumed_accountant_counts_earlier_rounds(wrapped):
    _, _, inner = wrapped
    strategy = AdapterDPFixedClipping(
        inner, noise_multiplier=2.0, clip_norm=1.0, rounds_done=4
    )
    assert strategy.epsilon() == pytest.approx(epsilon_after(2.0, 4, 1e-5))


def test_run_config_refuses_unsound_dp_settings():
    # Prepare
    base = {"differential-privacy": True, "num-server-rounds": 2}
    # Execute / Assert
    for extra, message in (
        ({"secure-aggregation": True, "min-sites": 2}, "cannot be combined"),
        ({"comm-dtype": "int8"}, "clipping quantised codes"),
        ({"comm-dtype": "fp16"}, "fp16 rounds small noise away"),
        ({"fraction-train": 0.5}, "needs fraction-train=1"),
        ({"dp-clip-norm": 0.0}, "dp-clip-norm must be > 0"),
        ({"dp-noise-multiplier": -1.0}, "dp-noise-multiplier must be >= 0"),
        ({"dp-delta": 1.0}, r"dp-delta must be in \(0, 1\)"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_platform({**base, **extra}, list_tasks())
    platform = parse_platform({**base, "dp-clip-norm": 0.2}, list_tasks())
    assert (platform.differential_privacy, platform.dp_clip_norm) == (True, 0.2)


def test_dp_refuses_tasks_that_declare_no_mean_of_same_shaped_updates(task):
    # Prepare: stand-ins declaring what SeLoRA and VFL-CLIP declare
    custom = type("Custom", (PairTask,), {"aggregation": "custom"})(None, task.platform)
    vertical = type("Vertical", (PairTask,), {"federation": "vertical"})(
        None, task.platform
    )
    # Execute / Assert
    with pytest.raises(ConfigError, match="'pair' declares aggregation = 'custom'"):
        check_differential_privacy(custom)
    with pytest.raises(ConfigError, match="'pair' is vertical"):
        check_differential_privacy(vertical)
    check_differential_privacy(task)


def test_server_builds_the_dp_wrapper_from_the_run_config(wrapped):
    # Prepare
    task, run, _ = wrapped
    platform = parse_platform(
        {
            "differential-privacy": True,
            "dp-noise-multiplier": 2.0,
            "dp-clip-norm": 0.3,
        },
        list_tasks(),
    )
    # Execute
    strategy = horizontal_strategy(task, run, platform, round_offset=3)
    # Assert: resumed after 3 releases, every site in every round
    assert isinstance(strategy, AdapterDPFixedClipping)
    assert (strategy.noise_multiplier, strategy.clipping_norm) == (2.0, 0.3)
    assert strategy.epsilon() == pytest.approx(epsilon_after(2.0, 3, 1e-5), rel=1e-9)


def test_dp_rounds_carry_the_evaluation_in_the_train_message(run):
    # Prepare: DP around a one-message-per-round FedAvg, 2 rounds
    task = WideTask(None, PlatformConfig())
    inner = AdapterFedAvg(
        task, run, min_sites=1, evaluate_with_train=True, last_round=2
    )
    strategy = AdapterDPFixedClipping(inner, noise_multiplier=0.0, clip_norm=10.0)
    reference = task.exchanged(task.build_model())
    arrays = state_to_record(reference, "fp32")
    first = asks(strategy, 2, arrays=arrays)
    strategy.aggregate_train(1, [update_reply(a, reference, 10) for a in first])
    assert asks(strategy, 2, phase="evaluate", arrays=arrays) == []
    second = asks(strategy, 2, server_round=2, arrays=arrays)
    replies = []
    for ask in second:
        reply = update_reply(ask, reference, 10)
        reply.content[PRIOR + METRICS] = metric_record(
            {"accuracy": 0.25 * (1 + site_of(ask)), NUM_EXAMPLES: 4}
        )
        replies.append(reply)
    # Execute
    strategy.aggregate_train(2, replies)
    # Assert: both configs asked (clip norm and evaluate-first), round 1's
    # evaluation recorded from the train replies, then round 2's release
    assert all(m.content["config"][EVALUATE_FIRST] for m in second)
    evaluate, train = run.read_metrics()[-2:]
    assert (evaluate["round"], evaluate["phase"]) == (1, "evaluate")
    assert evaluate["aggregated"]["accuracy"] == pytest.approx(0.375)
    assert (train["round"], train["phase"], train["accepted"]) == (2, "train", 2)
