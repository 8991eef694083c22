"""strategies/dp.py: Flower's server-side fixed-clipping wrapper on AdapterFedAvg."""

import math
import tomllib
from pathlib import Path

import pytest
import torch
from flwr.app import Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from safetensors.torch import load_file

from fedmed.config import ConfigError, parse_platform
from fedmed.privacy.accountant import epsilon_after
from fedmed.privacy.dp import update_norm
from fedmed.runs import RunDirectory
from fedmed.tasks import get_task, list_tasks
from fedmed.wire import (
    ARRAYS,
    METRICS,
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

REPO = Path(__file__).resolve().parents[2]


def _reply(ins: Message, state: dict, examples: int) -> Message:
    content = RecordDict(
        {
            ARRAYS: state_to_record(state, "fp32"),
            METRICS: metric_record(
                {"num-examples": examples, "site-id": ins.metadata.dst_node_id}
            ),
        }
    )
    return Message(content, reply_to=ins)


@pytest.fixture
def wrapped(tmp_path, monkeypatch):
    for field in ("_run_id", "_node_id", "_task_id"):  # as inside a running ServerApp
        monkeypatch.setattr(TaskIdentity, field, 1)
    config = tomllib.loads((REPO / "configs" / "classify_tiny.toml").read_text())
    task = get_task(config)
    run = RunDirectory(tmp_path / "run")
    run.create(config)
    inner = AdapterFedAvg(task, run, min_sites=1)
    return task, run, inner


def test_updates_are_clipped_noised_and_accounted(wrapped):
    # Prepare
    task, run, inner = wrapped
    strategy = AdapterDPFixedClipping(inner, noise_multiplier=1.0, clip_norm=0.01)
    reference = task.exchanged(task.build_model())
    arrays = state_to_record(reference, "fp32")
    strategy.current_arrays = arrays
    asks = [
        Message(RecordDict({ARRAYS: arrays}), dst_node_id=k, message_type="train")
        for k in (1, 2, 3)
    ]
    inner._send(asks, arrays)
    shifted = {k: v + 1.0 for k, v in reference.items()}
    poisoned = {k: v.clone() for k, v in shifted.items()}
    next(iter(poisoned.values())).view(-1)[0] = float("nan")
    replies = [
        _reply(asks[0], shifted, 10),
        _reply(asks[1], shifted, 500),
        _reply(asks[2], poisoned, 10),
    ]
    # Execute
    out, metrics = strategy.aggregate_train(1, replies)
    # Assert
    aggregate = record_to_state(out)
    size = sum(v.numel() for v in reference.values())
    expected_noise = 0.01 / 2 * math.sqrt(size)  # std sigma*C/m per element, m = 2
    assert update_norm(aggregate, reference) == pytest.approx(expected_noise, rel=0.15)
    assert update_norm(shifted, reference) > 100 * expected_noise
    assert metrics[EPSILON_KEY] == pytest.approx(epsilon_after(1.0, 1, 1e-5))
    saved = load_file(str(run.checkpoints / "round_1.safetensors"))
    for key, value in aggregate.items():
        torch.testing.assert_close(saved[key], value)
    train = [r for r in run.read_metrics() if r["phase"] == "train"]
    assert train[-1]["accepted"] == 2


def test_int8_wire_codec_is_refused(wrapped):
    task, run, _ = wrapped
    inner = AdapterFedAvg(task, run, codec="int8", min_sites=1)
    with pytest.raises(ValueError, match="int8"):
        AdapterDPFixedClipping(inner, noise_multiplier=1.0, clip_norm=1.0)


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


def test_dp_refuses_tasks_without_a_mean_of_same_shaped_updates():
    # Prepare
    configs = {
        name: tomllib.loads((REPO / "configs" / f"{name}_tiny.toml").read_text())
        for name in ("selora", "classify", "vfl_clip")
    }
    # Execute / Assert
    with pytest.raises(
        ConfigError, match="differential-privacy=true.*aggregation = 'custom'"
    ):
        check_differential_privacy(get_task(configs["selora"]))
    with pytest.raises(ConfigError, match="'vfl-clip' is vertical"):
        check_differential_privacy(get_task(configs["vfl_clip"]))
    check_differential_privacy(get_task(configs["classify"]))


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
