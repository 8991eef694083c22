"""``fedmed simulate --ray-address``: one simulation over a two-node Ray cluster.

The head node runs in one network namespace and a worker node in another
(each with its own private address on a bridge, nothing routed anywhere
else), both on this machine and one CPU each, so the two sites' actors must
land on different nodes. The run must equal the same simulation on a private
single-node Ray. Every Ray process is found by the namespace it lives in and
ended, and the namespaces are deleted, also when the test fails. Skipped where
namespaces cannot be made (not root, ``ip netns`` not permitted).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from fedmed.commands import simulate_command
from fedmed.deploy.netns import COORDINATOR, NamespaceNetwork, namespaces_available

REPO = Path(__file__).resolve().parents[2]
NO_NETNS = namespaces_available()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,  # ~2-4 min: two Ray nodes and two simulations
    pytest.mark.skipif(bool(NO_NETNS), reason=NO_NETNS or "namespaces work"),
]
WORKER = "site0"
GCS_PORT = 6379
SETS = ["classify.max-steps-per-round=3", "seed=7"]
ACTOR_NODES = """
import json, sys, ray
from ray._private import state
ray.init(address=sys.argv[1], include_dashboard=False, logging_level="ERROR")
actors = [
    a["Address"]["NodeID"]
    for a in state.actors().values()
    if a["ActorClassName"].endswith("ClientAppActor")
]
nodes = {n["NodeManagerAddress"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}
print(json.dumps({"actor_nodes": actors, "nodes": nodes}))
"""


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
        "OMP_NUM_THREADS": "1",
    }


def _in(network: NamespaceNetwork, host: str, *command: str, timeout: float = 180):
    return subprocess.run(
        network.placement(host).wrap(command),
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def _ray(network: NamespaceNetwork, host: str, *args: str, attempts: int = 2) -> None:
    """``ray start`` in ``host``'s namespace; retried once (slow GCS on a busy box)."""
    ray = str(Path(sys.executable).with_name("ray"))
    common = ["--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats"]
    address = network.address(host)
    for _attempt in range(attempts):
        done = _in(
            network, host, ray, "start", "--node-ip-address", address, *common, *args
        )
        if done.returncode == 0:
            return
        _end_processes(network, [network.namespace(host)])
    raise RuntimeError(f"ray start on {host} failed:\n{done.stdout}\n{done.stderr}")


def _end_processes(network: NamespaceNetwork, names: list[str] | None = None) -> None:
    """SIGTERM, then SIGKILL, every process living in this network's namespaces."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [
            int(pid)
            for name in names or network.made
            for pid in subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, text=True
            ).stdout.split()
        ]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if pids and sig == signal.SIGTERM:
            time.sleep(3)


@pytest.fixture
def two_node_cluster():
    """A Ray head in one namespace, a worker in another; the head's address."""
    network = NamespaceNetwork((None,))
    temp = Path(tempfile.mkdtemp(prefix="fmray", dir="/tmp"))
    network.create()
    try:
        head = f"{network.address(COORDINATOR)}:{GCS_PORT}"
        _ray(
            network,
            COORDINATOR,
            "--head",
            "--port",
            str(GCS_PORT),
            "--include-dashboard=false",
            "--temp-dir",
            str(temp),
        )
        _ray(network, WORKER, "--address", head)
        yield network, head
    finally:
        _end_processes(network)
        network.destroy()
        shutil.rmtree(temp, ignore_errors=True)
    assert network.existing() == []


def _simulate(out: Path, data: Path, extra: list[str]) -> list[str]:
    return simulate_command(
        "classify",
        out,
        data,
        sites=2,
        rounds=2,
        run_config=REPO / "configs" / "classify_tiny.toml",
        sets=SETS,
        extra=extra,
    )


def test_simulation_over_two_ray_nodes_equals_single_node(tmp_path, two_node_cluster):
    # Prepare
    network, head = two_node_cluster
    data = tmp_path / "data"
    single = subprocess.run(
        _simulate(tmp_path / "single", data, ["--cpus-per-site", "1"]),
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        timeout=600,
    )
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    # Execute
    spread = _in(
        network,
        COORDINATOR,
        *_simulate(tmp_path / "cluster", data, ["--ray-address", head]),
        timeout=600,
    )
    placed = _in(network, COORDINATOR, sys.executable, "-c", ACTOR_NODES, head)
    # Assert
    assert spread.returncode == 0, spread.stdout[-3000:] + spread.stderr[-3000:]
    assert placed.returncode == 0, placed.stderr[-3000:]
    found = json.loads(placed.stdout.strip().splitlines()[-1])
    head_node = found["nodes"][network.address(COORDINATOR)]
    worker_node = found["nodes"][network.address(WORKER)]
    assert {head_node, worker_node} <= set(found["actor_nodes"])
    expected = load_file(tmp_path / "single" / "checkpoints" / "round_2.safetensors")
    got = load_file(tmp_path / "cluster" / "checkpoints" / "round_2.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        assert (expected[key] - got[key]).abs().max() <= 1e-6, key
