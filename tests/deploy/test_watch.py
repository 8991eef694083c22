"""Driving a run: resubmission with resume after a failed Flower run; clean stop."""

import json
import sys
import time
from pathlib import Path

import psutil
import pytest

from fedmed.deploy.certs import CertLayout
from fedmed.deploy.local import DeploymentError, LocalDeployment
from fedmed.deploy.topology import node_config_arg
from fedmed.deploy.watch import drive_run


class FakeDeployment:
    """Flower stand-in: each submitted run writes some rounds, then ends."""

    def __init__(self, workdir: Path, run_dir: Path, script: list[tuple[int, str]]):
        self.workdir, self.run_dir, self.script = workdir, run_dir, script
        self.configs: list[str] = []

    def submit(self, app_dir: Path, run_config: Path) -> int:
        self.configs.append(run_config.read_text())
        last_round, status = self.script[len(self.configs) - 1]
        (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        for k in range(1, last_round + 1):
            (self.run_dir / "checkpoints" / f"round_{k}.safetensors").touch()
        if status == "finished:completed":
            summary = {"rounds_completed": last_round}
            (self.run_dir / "summary.json").write_text(json.dumps(summary))
        return len(self.configs)

    def run_status(self, run_id: int) -> str:
        return self.script[run_id - 1][1]


def config(run: Path) -> dict:
    return {"task.name": "classify", "num-server-rounds": 3, "run-dir": str(run)}


def test_failed_run_is_resubmitted_with_resume_until_all_rounds(tmp_path):
    # Prepare
    run = tmp_path / "run"
    fake = FakeDeployment(
        tmp_path, run, [(1, "finished:failed"), (3, "finished:completed")]
    )
    # Execute
    outcome = drive_run(fake, tmp_path, config(run), poll_s=0.01, timeout_s=30)
    # Assert
    assert outcome.run_ids == (1, 2) and outcome.rounds_completed == 3
    assert "resume" not in fake.configs[0]
    assert "resume = true" in fake.configs[1]


def test_run_that_keeps_failing_raises_after_the_allowed_resubmissions(tmp_path):
    # Prepare
    run = tmp_path / "run"
    fake = FakeDeployment(tmp_path, run, [(1, "finished:failed")] * 3)
    # Execute / Assert
    with pytest.raises(DeploymentError, match="1 of 3 rounds"):
        drive_run(fake, tmp_path, config(run), poll_s=0.01, max_resubmits=2)
    assert len(fake.configs) == 3


def test_stop_ends_started_processes_and_their_children(tmp_path):
    # Prepare
    layout = CertLayout(tmp_path / "certs")
    deployment = LocalDeployment(tmp_path / "work", layout, [])
    script = (
        "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    )
    parent = deployment.spawn("dummy", [sys.executable, "-c", script])
    children = []
    for _ in range(200):  # the child appears once the interpreter has started
        children = psutil.Process(parent.pid).children(recursive=True)
        if children:
            break
        time.sleep(0.1)
    # Execute
    deployment.stop(grace_s=5)
    # Assert
    assert parent.poll() is not None
    assert children and not any(
        c.is_running() and c.status() != "zombie" for c in children
    )


def test_node_config_names_the_site_folder_id_and_role():
    assert node_config_arg(Path("/d/site_1"), 1) == 'data-dir="/d/site_1" site-id=1'
    assert node_config_arg(Path("/d"), 2, "knowledge-provider").endswith(
        'role="knowledge-provider"'
    )
