"""strategies/dp.py: Flower's server-side fixed-clipping wrapper on AdapterFedAvg."""

import math
import tomllib
from pathlib import Path

import pytest
import torch
from flwr.app import Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from safetensors.torch import load_file

from fedmed.bench.accountant import epsilon_after
from fedmed.bench.loop import update_norm
from fedmed.records import (
    ARRAYS,
    METRICS,
    metric_record,
    record_to_state,
    state_to_record,
)
from fedmed.runs import RunDirectory
from fedmed.tasks import get_task
from strategies.adapter_fedavg import AdapterFedAvg
from strategies.dp import EPSILON_KEY, AdapterDPFixedClipping

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
    inner._begin(asks, arrays)
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
