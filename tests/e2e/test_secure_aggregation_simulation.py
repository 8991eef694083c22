"""`fedmed simulate --set secure-aggregation=true`: FedAvg through secure sums.

Three classify sites (configs/classify_tiny.toml) for two rounds through
Flower's simulation runtime. The secure run must write a complete run
directory and end where plain FedAvg with the same seed ends: the secure
mean differs from the plain one only by the fixed-point step (round 1: the
same float32 model; round 2 after training on it: within 1e-5). Plain FedAvg
is computed in this process from the same task calls the ClientApp makes
(bit-identical to a plain `fedmed simulate` run, and 30 s cheaper). The
server must record no site's training metrics. A single site is refused
before anything runs.
"""

import json
import subprocess
import time
import tomllib

import pytest
import torch
from safetensors.torch import load_file

from fedmed.commands import simulate_command
from fedmed.tasks import get_task
from tests.contracts import check_contract
from tests.e2e.test_method_simulations import REPO

pytestmark = pytest.mark.e2e
TINY = REPO / "configs" / "classify_tiny.toml"
SECURE = ["secure-aggregation=true"]


def simulate(run, data, sites: int, sets=()) -> subprocess.CompletedProcess:
    cmd = simulate_command("classify", run, data, sites, 2, TINY, sets)
    return subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )


def rows(run, phase: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, filter(None, lines)) if r["phase"] == phase]


def plain_fedavg(data, rounds: int) -> tuple[list[dict], list[float]]:
    """Plain FedAvg of the 3 sites in this process: aggregates, held-out accuracy."""
    task = get_task({**tomllib.loads(TINY.read_text()), "data-dir": str(data)})
    state, aggregates, accuracy = task.exchanged(task.build_model()), [], []
    for server_round in range(1, rounds + 1):
        states, weights = [], []
        for site in range(3):
            model = task.build_model()
            task.load_exchanged(model, state)
            node = {"partition-id": site, "num-partitions": 3}
            result = task.fit(
                model, task.site_data(node), {"server-round": server_round}
            )
            states.append(task.exchanged(model))
            weights.append(result.num_examples)
        state = task.aggregate(states, weights)  # what AdapterFedAvg computes
        model = task.build_model()
        task.load_exchanged(model, state)
        heldout = task.evaluate_heldout(model, task.heldout_data())
        aggregates.append(state)
        accuracy.append(heldout["accuracy"])
    return aggregates, accuracy


def test_secure_run_ends_where_plain_fedavg_ends(tmp_path):
    # Prepare
    data, run = tmp_path / "data", tmp_path / "secure"
    # Execute
    started = time.perf_counter()
    done = simulate(run, data, 3, SECURE)
    wall_s = time.perf_counter() - started
    # Assert: a complete, contract-conforming run directory
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    check_contract("run", run)
    aggregates, accuracy = plain_fedavg(data, 2)
    for round_id, atol in ((1, 1e-7), (2, 1e-5)):
        saved = load_file(str(run / "checkpoints" / f"round_{round_id}.safetensors"))
        for key, value in aggregates[round_id - 1].items():
            torch.testing.assert_close(saved[key], value, rtol=0, atol=atol)
    trend = [r["aggregated"]["accuracy"] for r in rows(run, "heldout")]
    assert trend[1:] == pytest.approx(accuracy, abs=0.01)
    assert trend[-1] > trend[0]
    # The server kept byte counts per site, no site's metrics or weight
    train = rows(run, "train")
    assert [(r["status"], r["accepted"]) for r in train] == [("ok", 3), ("ok", 3)]
    for record in train:
        assert set(record["sites"]) == {"0", "1", "2"}
        assert all(
            set(v) == {"bytes_up", "bytes_down"} for v in record["sites"].values()
        )
    assert {"train_loss", "num-examples"} <= set(train[0]["aggregated"])
    assert len(rows(run, "setup")) == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["secure_aggregation"] is True and summary["rounds_completed"] == 2
    print(
        f"secure simulation {wall_s:.1f} s; train rows {[r['wall_s'] for r in train]}"
    )


def test_a_single_site_is_refused_before_anything_runs(tmp_path):
    # Execute: one site; min-sites=1 is what a plain one-site run needs
    done = simulate(tmp_path / "run", tmp_path / "data", 1, [*SECURE, "min-sites=1"])
    # Assert
    assert done.returncode != 0
    assert "secure-aggregation=true needs min-sites >= 2" in done.stdout + done.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
