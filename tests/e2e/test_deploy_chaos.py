"""Chaos on a real TLS deployment: crashed SuperLink and SuperNodes, the run still ends.

In the spirit of Flower's reconnection test: the SuperLink is killed and
restarted on its state database, SuperNodes are killed mid-round; the run
must reach its configured rounds with every round's checkpoint present. With
the SuperLink in process isolation the ServerApp runs under the separate
SuperExec and reconnects to the restarted SuperLink; had it died, the run would
be resubmitted with ``resume=true`` (``drive_run``).
"""

import json
import signal
import threading
import time

import pytest

from fedmed.deploy.local import LocalDeployment
from fedmed.deploy.watch import drive_run, rounds_completed
from tests.contracts import check_contract
from tests.e2e.test_deploy import (
    REPO,
    classify_config,
    deployment_for,
    processes_using,
    records,
    synth_sites,
    wait_for,
)

pytestmark = pytest.mark.e2e


class BackgroundRun(threading.Thread):
    """``drive_run`` in a thread, so the test can break things meanwhile."""

    def __init__(self, deployment: LocalDeployment, config: dict) -> None:
        super().__init__(daemon=True)
        self.deployment, self.config = deployment, config
        self.outcome, self.error = None, None

    def run(self) -> None:
        try:
            self.outcome = drive_run(
                self.deployment, REPO, self.config, timeout_s=840, max_resubmits=3
            )
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_run_survives_superlink_restart_and_a_crashed_site(tmp_path):
    # Prepare
    data = synth_sites(tmp_path / "data")
    run = tmp_path / "run"
    config = classify_config(run, data, 3, **{"min-sites": 2})
    started = time.monotonic()
    with deployment_for(tmp_path, data, 3) as deployment:
        deployment.start()
        deployment.trust_app(REPO)
        worker = BackgroundRun(deployment, config)
        worker.start()
        # Execute: crash the SuperLink after round 1, restart it on its database
        wait_for(lambda: rounds_completed(run) >= 1, 400, "round 1")
        deployment.kill("superlink", signal.SIGKILL)
        deployment.start_superlink()
        if not deployment.alive("superexec"):
            deployment.start_superexec()
        # ... then crash site 1 in the middle of round 2 and bring it back
        wait_for(
            lambda: _run_running(deployment),
            400,
            "the run after the restart",
            poll_s=3.0,
        )
        time.sleep(10)  # the sites are now inside round 2
        deployment.kill("site-1", signal.SIGKILL)
        deployment.restart_supernode(deployment.sites[1])
        worker.join(timeout=840)
    elapsed = time.monotonic() - started
    # Assert
    assert worker.error is None, worker.error
    assert worker.outcome.rounds_completed == 3
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds_completed"] == 3
    for k in (1, 2, 3):
        assert (run / "checkpoints" / f"round_{k}.safetensors").is_file()
    train_rounds = [r["round"] for r in records(run) if r["phase"] == "train"]
    assert train_rounds == [1, 2, 3]
    assert not processes_using(tmp_path / "work")
    print(f"chaos run: {elapsed:.0f} s, Flower runs {worker.outcome.run_ids}")
    check_contract("run", run)


def _run_running(deployment: LocalDeployment) -> bool:
    """The restarted SuperLink answers and a run (continued or resumed) executes."""
    reply = deployment.flwr("ls", "--format", "json").stdout
    try:
        runs = json.loads(reply[reply.find("{") :]).get("runs", [])
    except json.JSONDecodeError:
        return False
    return any(r.get("status") == "running" for r in runs)


@pytest.mark.slow  # ~120 s: a deployment with a site killed mid-run
@pytest.mark.timeout(600)
def test_site_killed_mid_run_does_not_stop_the_run_when_min_sites_holds(tmp_path):
    # Prepare
    data = synth_sites(tmp_path / "data")
    run = tmp_path / "run"
    config = classify_config(run, data, 2, **{"min-sites": 2})
    with deployment_for(tmp_path, data, 3) as deployment:
        deployment.start()
        deployment.trust_app(REPO)
        worker = BackgroundRun(deployment, config)
        worker.start()
        # Execute: site 2 crashes as round 1 begins and never comes back
        wait_for(lambda: (run / "metrics.jsonl").is_file(), 300, "round 1")
        deployment.kill("site-2", signal.SIGKILL)
        worker.join(timeout=560)
    # Assert
    assert worker.error is None, worker.error
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds_completed"] == 2
    train = {r["round"]: r for r in records(run) if r["phase"] == "train"}
    assert sorted(train) == [1, 2]
    assert "site-2" not in train[2]["sites"] and len(train[2]["sites"]) == 2
    assert (run / "checkpoints" / "round_2.safetensors").is_file()
