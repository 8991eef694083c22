"""Warm rounds on a real TLS deployment: one runner per site, simulation's results.

Each site's SuperNode hands its messages to one long-lived ClientApp runner
(``clients.warm_worker``). The deployed run must end where the simulated run
of the same app, data and sites ends; the runner must survive a message that
raises, and come back when killed.
"""

import json
import signal
import subprocess

import psutil
import pytest
import torch
from safetensors.torch import load_file

from fedmed.commands import simulate_command
from fedmed.deploy.local import LocalDeployment
from fedmed.deploy.registration import flower_bin
from fedmed.deploy.watch import drive_run
from tests.e2e.test_deploy import (
    REPO,
    TINY,
    classify_config,
    deployment_for,
    records,
    synth_sites,
    wait_for,
)

pytestmark = pytest.mark.e2e
RUNNER = "clients.warm_worker"


def runner_pids(deployment: LocalDeployment, site: str) -> list[int]:
    """Live warm runners started by ``site``'s SuperNode."""
    root = psutil.Process(deployment._procs[site].pid)
    return [
        proc.pid
        for proc in root.children(recursive=True)
        if RUNNER in " ".join(proc.cmdline()) and proc.status() != "zombie"
    ]


def one_runner(deployment: LocalDeployment, site: str) -> int:
    wait_for(lambda: len(runner_pids(deployment, site)) == 1, 120, f"{site} runner")
    return runner_pids(deployment, site)[0]


@pytest.mark.slow  # ~100 s; the default suite's deploy e2e covers warm runners
@pytest.mark.timeout(900)
def test_a_warm_deployed_run_ends_where_the_simulated_run_ends(tmp_path):
    # Prepare: a simulation with two messages per round, a deployment with one
    data = synth_sites(tmp_path / "data", sites=2, samples=100)
    simulated, deployed = tmp_path / "sim", tmp_path / "run"
    command = simulate_command("classify", simulated, data, 2, 2, run_config=TINY)
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    config = {**classify_config(deployed, data, 2), "evaluate-with-train": True}
    with deployment_for(tmp_path, data, 2) as deployment:
        deployment.start()
        deployment.trust_app(REPO)
        before = {s: one_runner(deployment, s) for s in ("site-0", "site-1")}
        # ... and a local process without the runner's secret asks for site-0's
        # messages on its Runtime API (loopback)
        deployment.spawn(
            "rogue-runner",
            [flower_bin("flower-superexec"), "--insecure", "--runtime-api-address"]
            + [f"127.0.0.1:{deployment.sites[0].port}"],
        )
        # Execute
        outcome = drive_run(deployment, REPO, config, max_resubmits=0)
        after = {s: runner_pids(deployment, s) for s in ("site-0", "site-1")}
        logs = deployment.workdir / "logs"
        rogue_log = (logs / "rogue-runner.log").read_text()
        site0_log = (logs / "site-0.log").read_text()
    # Assert: the same process served every message of its site, the rogue none
    assert outcome.rounds_completed == 2
    assert after == {s: [pid] for s, pid in before.items()}
    assert "SuperExec authentication failed" in site0_log
    assert "flwr-clientapp" not in rogue_log
    ours = load_file(deployed / "checkpoints" / "round_2.safetensors")
    theirs = load_file(simulated / "checkpoints" / "round_2.safetensors")
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():  # bit for bit: same code, same order
        assert torch.equal(tensor, theirs[name]), name
    assert site0_log.count("stays warm for the next messages") == 1


@pytest.mark.slow  # ~65 s: a deployment with a fault and a killed runner
@pytest.mark.timeout(900)
def test_a_raising_message_and_a_killed_runner_do_not_stop_the_run(tmp_path):
    # Prepare: site 1 raises in round 1; site 0's runner is killed before the run
    data = synth_sites(tmp_path / "data", sites=2, samples=100)
    run = tmp_path / "run"
    config = classify_config(run, data, 2, **{"min-sites": 1, "faults": "raise@1:1"})
    with deployment_for(tmp_path, data, 2) as deployment:
        deployment.start()
        deployment.trust_app(REPO)
        killed = one_runner(deployment, "site-0")
        survivor = one_runner(deployment, "site-1")
        # Execute
        psutil.Process(killed).send_signal(signal.SIGKILL)
        outcome = drive_run(deployment, REPO, config, max_resubmits=0)
        after = {s: runner_pids(deployment, s) for s in ("site-0", "site-1")}
    # Assert
    assert outcome.rounds_completed == 2
    phases = records(run)
    train = {r["round"]: sorted(r["sites"]) for r in phases if r["phase"] == "train"}
    assert train == {1: ["site-0"], 2: ["site-0", "site-1"]}
    assert after["site-1"] == [survivor]  # the crash was the message's, not its
    assert len(after["site-0"]) == 1 and after["site-0"] != [killed]
    site0 = (deployment.workdir / "logs" / "site-0.log").read_text()
    site1 = (deployment.workdir / "logs" / "site-1.log").read_text()
    assert "warm ClientApp runner exited" in site0
    assert "scripted crash in round 1" in site1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds_completed"] == 2
