"""summary.json states exactly what crossed the network, per phase and direction."""

from __future__ import annotations

from fedmed.config import PlatformConfig
from fedmed.wire.records import PACKED, state_to_record
from server.server_app import write_run_summary
from strategies.adapter_fedavg import AdapterFedAvg
from tests.privacy.scripted_sites import ScriptedGrid, honest, lost, lying
from tests.strategies.conftest import (  # noqa: F401 - fixtures
    _inside_serverapp,
    reference_state,
    run,
    task,
)

NODE = 100
NUMBER = 8  # bytes of one metric value on the wire


def test_summary_names_every_tensor_metric_and_statistic_that_crossed(
    task,  # noqa: F811
    run,  # noqa: F811
):
    # Prepare: two honest sites, one claiming 1e18 examples, one lost
    strategy = AdapterFedAvg(task, run, min_sites=2)
    grid = ScriptedGrid(
        {
            NODE: honest(0, 1.0),
            NODE + 1: honest(1, 3.0),
            NODE + 2: lying(2, 1e18),
            NODE + 3: lost,
        }
    )
    initial = state_to_record(reference_state(), "fp32")
    strategy.start(grid, initial, num_rounds=2, timeout=5.0)
    # Execute
    write_run_summary(run, task, PlatformConfig(), {})
    network = run.read_summary()["network"]
    # Assert: the model goes down in both phases, each tensor as its float32
    # values, inside one packed array whose header and numpy's array header
    # are counted under its own name (Flower's byte count includes both);
    # what comes up is the update, the metrics and the statistics
    reference = reference_state()
    tensors = {k: v.numel() * 4 for k, v in reference.items()}
    packed = state_to_record(reference, "fp32")[PACKED]
    tensors[PACKED] = len(packed.data) - sum(tensors.values())
    assert 0 < tensors[PACKED] < 400 and (tensors["weight"], tensors["bias"]) == (24, 8)
    train, evaluate = network["train"], network["evaluate"]
    assert train["down"]["carried"]["arrays"] == tensors
    assert evaluate["down"]["carried"]["arrays"] == tensors
    assert train["up"]["carried"]["arrays"] == tensors
    assert train["up"]["carried"]["metrics"] == {
        "accuracy": NUMBER,  # the lying site sends it in every reply
        "num-examples": NUMBER,
        "site-id": NUMBER,
        "train_loss": NUMBER,
    }
    assert set(evaluate["up"]["carried"]) == {"metrics", "statistics"}
    assert evaluate["up"]["carried"]["statistics"] == {"counts": 2 * NUMBER}
    assert set(evaluate["up"]["carried"]["metrics"]) == {
        "accuracy",
        "num-examples",
        "site-id",
        "train_loss",
    }
    # Assert: counts per phase over 2 rounds of 4 sites
    for phase in (train, evaluate):
        assert phase["rows"] == 2
        assert (phase["rejected"], phase["failed"]) == (2, 2)
        assert phase["down"]["messages"] == 8 and phase["up"]["messages"] == 6
    rows = run.read_metrics()
    for name, phase in (("train", train), ("evaluate", evaluate)):
        mine = [r for r in rows if r["phase"] == name]
        assert phase["up"]["bytes"] == sum(r["bytes_up"] for r in mine) > 0
        assert phase["down"]["bytes"] == sum(r["bytes_down"] for r in mine) > 0
