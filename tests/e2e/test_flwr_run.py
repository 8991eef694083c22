"""The repository root is a Flower App: `flwr run .` runs it like any other."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fedmed.data.synth_dermamnist import synthesize

REPO = Path(__file__).resolve().parents[2]
FLWR = Path(sys.executable).with_name("flwr")
pytestmark = pytest.mark.e2e


def _processes_started_with(flwr_home: Path) -> list[int]:
    """PIDs of processes whose environment names this test's FLWR_HOME."""
    marker = f"FLWR_HOME={flwr_home}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _stop_processes_started_with(flwr_home: Path) -> None:
    """`flwr run` leaves its local SuperLink running; stop exactly ours."""
    for pid in _processes_started_with(flwr_home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _env(flwr_home: Path) -> dict[str, str]:
    # `flwr run` starts `flower-superlink` by name: the venv's bin must be on PATH;
    # as the README says, the app runs in this environment (no `uv sync` of its
    # dependencies into a runtime environment of Flower's own).
    path = f"{FLWR.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {
        **os.environ,
        "FLWR_HOME": str(flwr_home),
        "PATH": path,
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }


def _toml_pairs(config: dict) -> str:
    def value(v):
        return json.dumps(v) if isinstance(v, str) else str(v).lower()

    return " ".join(f"{k}={value(v)}" for k, v in config.items())


def test_flwr_run_on_a_local_simulation_federation_writes_the_run_directory(tmp_path):
    data, run, home = tmp_path / "data", tmp_path / "run", tmp_path / "flwr-home"
    home.mkdir()
    synthesize(data, 2, samples_per_site=80, seed=3)
    tiny = tomllib.loads((REPO / "configs" / "classify_tiny.toml").read_text())
    overrides = {
        **tiny,
        "num-server-rounds": 1,
        "data-dir": str(data),
        "run-dir": str(run),
    }
    env = _env(home)
    cmd = [
        str(FLWR),
        "run",
        ".",
        "--stream",
        "--federation-config",
        "num-supernodes=2 client-resources-num-cpus=1",
        "--run-config",
        _toml_pairs(overrides),
    ]
    try:
        done = subprocess.run(
            cmd, cwd=REPO, env=env, timeout=400, capture_output=True, text=True
        )
    finally:
        _stop_processes_started_with(home)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds_completed"] == 1
    assert (run / "checkpoints" / "round_1.safetensors").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["classify.depth"] == 2 and config["data-dir"] == str(data)


def test_flwr_run_refuses_an_undeclared_key(tmp_path):
    home = tmp_path / "flwr-home"
    home.mkdir()
    env = _env(home)
    cmd = [
        str(FLWR),
        "run",
        ".",
        "--federation-config",
        "num-supernodes=2",
        "--run-config",
        "classify.lora-rnak=4",
    ]
    try:
        done = subprocess.run(
            cmd, cwd=REPO, env=env, timeout=200, capture_output=True, text=True
        )
    finally:
        _stop_processes_started_with(home)
    assert done.returncode != 0
    assert "Invalid run configuration" in done.stdout + done.stderr
