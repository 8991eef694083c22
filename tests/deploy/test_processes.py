"""A deployment's processes are found and stopped, also when detached or orphaned."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fedmed.deploy.processes import TAG, DeploymentProcesses

# A parent that starts a helper in a session of its own (as the SuperLink starts
# flower-superexec), which starts a grandchild (as flwr-serverapp); each one
# writes its pid to a file and sleeps. The grandchild ignores SIGTERM.
TREE = """
import os, signal, subprocess, sys, time
out, depth = sys.argv[1], int(sys.argv[2])
if depth == 2:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(f"{out}/pid_{depth}", "w").write(str(os.getpid()))
if depth < 2:
    subprocess.Popen([sys.executable, __file__, out, str(depth + 1)],
                     start_new_session=True)
time.sleep(600)
"""


def start_tree(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen, list]:
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    root = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), "0"],
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    paths = [tmp_path / f"pid_{d}" for d in range(3)]
    while not all(p.is_file() and p.read_text() for p in paths):
        assert time.monotonic() < deadline, "process tree did not start"
        time.sleep(0.05)
    return root, [int(p.read_text()) for p in paths]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def tree(tmp_path):
    processes = DeploymentProcesses()
    root, pids = start_tree(tmp_path, processes.environment(dict(os.environ)))
    processes.adopt(root.pid)
    yield processes, root, pids
    for pid in pids:  # never leave a sleeper behind, whatever the test did
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    root.wait(timeout=10)


def test_members_include_helpers_in_their_own_sessions(tree):
    # Prepare
    processes, _, pids = tree
    # Execute
    members = {p.pid for p in processes.members()}
    # Assert
    assert set(pids) <= members
    assert len({os.getsid(pid) for pid in pids}) == 3  # three separate sessions


def test_stop_kills_orphans_whose_parent_died_first(tree):
    # Prepare: the root dies abruptly, its helpers are re-parented to init
    processes, root, pids = tree
    root.kill()
    root.wait(timeout=10)
    assert alive(pids[1]) and alive(pids[2])
    # Execute
    processes.stop(grace_s=1.0)
    # Assert: gone, including the grandchild that ignores SIGTERM
    assert not any(alive(pid) for pid in pids)
    assert processes.members() == []


def test_stop_leaves_other_deployments_alone(tmp_path, tree):
    # Prepare: a second, independent tree with another tag
    processes, _, pids = tree
    other = DeploymentProcesses()
    (tmp_path / "other").mkdir()
    other_root, other_pids = start_tree(
        tmp_path / "other", other.environment(dict(os.environ))
    )
    try:
        # Execute
        processes.stop(grace_s=1.0)
        # Assert
        assert not any(alive(pid) for pid in pids)
        assert all(alive(pid) for pid in other_pids)
    finally:
        other.adopt(other_root.pid)
        other.stop(grace_s=0.5)
        other_root.wait(timeout=10)
    assert not any(alive(pid) for pid in other_pids)


def test_environment_carries_the_tag_and_keeps_the_base():
    # Prepare
    processes = DeploymentProcesses("abc123")
    # Execute
    env = processes.environment({"PATH": "/bin"})
    # Assert
    assert env == {"PATH": "/bin", TAG: "abc123"}
