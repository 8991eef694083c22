"""End-to-end simulations through Flower's runtime, as a user runs them."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fedmed.commands import simulate_command
from tests.contracts import check_contract

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def fedmed(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedmed", *args]


def simulate_args(out: Path, data: Path, rounds: int, *extra: str) -> list[str]:
    config = REPO / "configs" / "classify_tiny.toml"
    return simulate_command(
        "classify", out, data, 3, rounds, run_config=config, compare=True, extra=extra
    )


def records(run: Path) -> list[dict]:
    return [
        json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x
    ]


@pytest.fixture(scope="module")
def derma(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "derma"
    subprocess.run(
        fedmed("data", "synth", "dermamnist", "--out", str(out), "--sites", "3"),
        check=True,
        cwd=REPO,
    )
    return out


def test_three_site_lora_run_writes_run_dir_learns_and_sends_little(tmp_path, derma):
    run = tmp_path / "run"
    subprocess.run(simulate_args(run, derma, 2), check=True, cwd=REPO, timeout=600)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds_completed"] == 2
    assert summary["final_heldout"]["accuracy"] > summary["initial_heldout"]["accuracy"]
    assert summary["bytes_up_per_round_per_site"] < 0.10 * summary["full_model_bytes"]
    assert set(summary["comparison"]) == {
        "federated",
        "local (mean of sites)",
        "pooled",
    }
    assert (run / "checkpoints" / "round_2.safetensors").is_file()
    train = [r for r in records(run) if r["phase"] == "train"]
    assert all(len(r["sites"]) == 3 and r["bytes_up"] > 0 for r in train)
    check_contract("run", run)


@pytest.mark.slow  # ~60 s; faults through a simulation also run in tests/bench
def test_bad_replies_are_rejected_and_the_run_continues(tmp_path, derma):
    run = tmp_path / "faulty"
    faults = "faults=nan@1:1,shape@2:2,raise@0:2"
    subprocess.run(
        simulate_args(
            run, derma, 2, "--set", faults, "--set", "min-sites=1", "--no-compare"
        ),
        check=True,
        cwd=REPO,
        timeout=600,
    )
    train = {r["round"]: r for r in records(run) if r["phase"] == "train"}
    assert train[1]["accepted"] == 2 and [x["site"] for x in train[1]["rejected"]] == [
        "1"
    ]
    assert "NaN" in train[1]["rejected"][0]["reason"]
    assert train[2]["accepted"] == 1 and len(train[2]["rejected"]) == 2
    reasons = " ".join(x["reason"] for x in train[2]["rejected"])
    assert "InjectedFault" in reasons and "shape" in reasons
    assert json.loads((run / "summary.json").read_text())["rounds_completed"] == 2


def test_killed_run_resumes_to_configured_rounds(tmp_path, derma):
    # Prepare: one message per round, so the run is killed owing round 1's
    # evaluation (it rides on round 2's train message)
    run = tmp_path / "resumable"
    fused = ("--set", "evaluate-with-train=true")
    proc = subprocess.Popen(
        simulate_args(run, derma, 3, "--no-compare", *fused),
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (run / "checkpoints" / "round_1.safetensors").exists():
        assert time.time() < deadline and proc.poll() is None, (
            "run never reached round 1"
        )
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(
        simulate_args(run, derma, 3, "--resume", *fused),
        check=True,
        cwd=REPO,
        timeout=600,
    )
    rounds = [r["round"] for r in records(run) if r["phase"] == "train"]
    assert rounds == sorted(set(rounds)) and rounds[-1] == 3 and rounds[0] == 1
    heldout = [r["round"] for r in records(run) if r["phase"] == "heldout"]
    assert heldout == sorted(set(heldout)) and heldout[-1] == 3
    evaluated = [r["round"] for r in records(run) if r["phase"] == "evaluate"]
    assert evaluated == [1, 2, 3]  # the resumed run paid what the killed one owed


def test_one_message_rounds_train_and_score_the_same_model(tmp_path, derma):
    # Prepare: the same 2-round run with a train and an evaluate message per
    # round, and with the evaluation carried by the next train message
    runs = {}
    for fused in (False, True):
        run = runs[fused] = tmp_path / f"fused-{fused}"
        flag = f"evaluate-with-train={str(fused).lower()}"
        subprocess.run(
            simulate_args(run, derma, 2, "--set", flag, "--no-compare"),
            check=True,
            cwd=REPO,
            timeout=600,
        )
    # Assert: the same checkpoints, the same evaluation of each round, and
    # only the last round's evaluation sent in a message of its own. Equal to
    # float32 rounding, not bit for bit: sites train concurrently on a shared
    # CPU, and BLAS kernels may round differently from run to run even with
    # the same random draws (a different draw would move weights by percents)
    for k in (1, 2):
        name = f"checkpoints/round_{k}.safetensors"
        fused, plain = (load_file(runs[f] / name) for f in (True, False))
        assert fused.keys() == plain.keys()
        for key, value in fused.items():
            torch.testing.assert_close(value, plain[key], rtol=1e-4, atol=1e-6)
    scores = {
        fused: {
            r["round"]: r["aggregated"]
            for r in records(run)
            if r["phase"] == "evaluate"
        }
        for fused, run in runs.items()
    }
    assert set(scores[True]) == set(scores[False]) == {1, 2}
    for k, row in scores[False].items():
        assert scores[True][k] == pytest.approx(row, rel=1e-4, abs=1e-6)
    network = {
        fused: json.loads((run / "summary.json").read_text())["network"]
        for fused, run in runs.items()
    }
    assert network[False]["evaluate"]["down"]["messages"] == 6
    assert network[True]["evaluate"]["down"]["messages"] == 3
    assert network[True]["train"]["down"]["messages"] == 6
    assert "evaluated-metrics" in network[True]["train"]["up"]["carried"]
