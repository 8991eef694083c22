"""A real closed deployment on 127.0.0.1: TLS, node auth, Fleet gate, pinned apps.

Every process is a real ``flower-superlink`` / ``flower-superexec`` /
``flower-supernode`` (or fedmed's gate and pinning SuperNode); nothing leaves
the loopback interface and every process is stopped, children included.
"""

import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fedmed.config.run_config import resolve_run_config
from fedmed.deploy.certs import ensure_certificates
from fedmed.deploy.health import probe_grpc, probe_https
from fedmed.deploy.local import LocalDeployment
from fedmed.deploy.local_run import local_sites
from fedmed.deploy.processes import TAG
from fedmed.deploy.site_keys import init_site
from fedmed.deploy.topology import LOOPBACK, Site
from fedmed.deploy.watch import write_run_config
from tests.contracts import check_contract

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "classify_tiny.toml"
pytestmark = pytest.mark.e2e


def synth_sites(out: Path, sites: int = 3, samples: int = 200) -> Path:
    """Synthetic DermaMNIST for ``sites`` hospitals (+ heldout)."""
    subprocess.run(
        [sys.executable, "-m", "fedmed", "data", "synth", "dermamnist"]
        + ["--out", str(out), "--sites", str(sites)]
        + ["--samples-per-site", str(samples)],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    return out


def processes_using(folder: Path) -> list[psutil.Process]:
    """Live processes whose command line mentions ``folder``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(folder) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def tagged(deployment_id: str) -> list[int]:
    """Live processes carrying a deployment's tag."""
    found = []
    for proc in psutil.process_iter():
        try:
            mine = proc.environ().get(TAG) == deployment_id
            if mine and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def records(run: Path) -> list[dict]:
    return [
        json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x
    ]


def classify_config(run: Path, data: Path, rounds: int, **extra) -> dict:
    return resolve_run_config(
        "classify",
        rounds=rounds,
        out=run,
        data_dir=data,
        files=[TINY],
        overrides=extra,
        resume=False,
    )


def deployment_for(tmp_path: Path, data: Path, sites: int) -> LocalDeployment:
    """A loopback deployment of ``sites`` sites, keys made in their folders."""
    work = tmp_path / "work"
    layout = ensure_certificates(work / "certs")
    return LocalDeployment(work, layout, local_sites(work, data, [None] * sites))


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll_s)


@pytest.mark.timeout(600)
def test_three_sites_train_two_rounds_over_tls_with_node_auth(tmp_path):
    # Prepare
    data = synth_sites(tmp_path / "data")
    run, work = tmp_path / "run", tmp_path / "work"
    command = [sys.executable, "-m", "fedmed.deploy", "local", "--sites", "3"]
    command += ["--rounds", "2", "--task", "classify", "--run-config", str(TINY)]
    command += ["--data-dir", str(data), "--out", str(run), "--workdir", str(work)]
    command += ["--timeout", "540"]
    # Execute
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=580
    )
    # Assert
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds_completed"] == 2
    train = [r for r in records(run) if r["phase"] == "train"]
    assert [r["round"] for r in train] == [1, 2]
    assert all(sorted(r["sites"]) == ["site-0", "site-1", "site-2"] for r in train)
    layout = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert {
        "config.json",
        "metrics.jsonl",
        "summary.json",
        "checkpoints/round_1.safetensors",
        "checkpoints/round_2.safetensors",
    } <= layout
    superlink_log = (work / "logs" / "superlink.log").read_text()
    assert f"running on https://{LOOPBACK}" in superlink_log
    for k in range(3):  # each site ran the app because it pinned its hash, in
        # one warm process that served every message
        site_log = (work / "logs" / f"site-{k}.log").read_text()
        assert "is trusted by" in site_log
        assert site_log.count("stays warm for the next messages") == 1
    # one message per round: round 1's evaluation came with round 2's training
    evaluate = {r["round"]: r for r in records(run) if r["phase"] == "evaluate"}
    assert set(evaluate) == {1, 2} and evaluate[1]["carried_by"] == "train"
    assert "carried_by" not in evaluate[2] and len(evaluate[2]["sites"]) == 3
    registry = json.loads((work / "state" / "sites.json").read_text())
    assert sorted(registry["sites"]) == ["site-0", "site-1", "site-2"]
    assert "round 2 train: 3 sites" in done.stdout
    assert not processes_using(work), "deployment processes outlived the command"
    check_contract("run", run)


@pytest.mark.timeout(420)
def test_stop_in_the_middle_of_a_round_leaves_no_process(tmp_path):
    # Prepare: a run whose ServerApp and warm ClientApp runner are alive
    data = synth_sites(tmp_path / "data", sites=1, samples=100)
    config = classify_config(tmp_path / "run", data, 3, **{"min-sites": 1})
    deployment = deployment_for(tmp_path, data, 1)
    try:
        deployment.start()
        deployment.trust_app(REPO)
        deployment.submit(REPO, write_run_config(config, tmp_path / "run.toml"))

        def helpers() -> dict[str, list[psutil.Process]]:
            found: dict[str, list[psutil.Process]] = {}
            for name in ("superlink", "superexec", "site-0"):
                root = psutil.Process(deployment._procs[name].pid)
                for proc in root.children(recursive=True):
                    for helper in ("flwr-serverapp", "clients.warm_worker"):
                        if helper in " ".join(proc.cmdline()):
                            found.setdefault(helper, []).append(proc)
            return found

        wait_for(lambda: len(helpers()) == 2, 300, "ServerApp and ClientApp processes")
        running = [proc for procs in helpers().values() for proc in procs]
    finally:
        # Execute
        deployment.stop()
    # Assert: nothing, not even the helpers started in sessions of their own
    assert not any(proc.is_running() and proc.status() != "zombie" for proc in running)
    assert not processes_using(deployment.workdir)
    assert tagged(deployment.processes.deployment_id) == []


@pytest.fixture(scope="module")
def one_site_deployment(tmp_path_factory):
    """Coordinator + site 0 registered and connected through the gate."""
    tmp = tmp_path_factory.mktemp("refusal")
    (tmp / "data" / "site_0").mkdir(parents=True)
    with deployment_for(tmp, tmp / "data", 1) as deployment:
        deployment.start()
        deployment.wait_online(1, timeout_s=120)
        yield deployment
    assert not processes_using(tmp / "work")


@pytest.mark.timeout(180)
def test_supernode_with_an_unregistered_key_is_refused(one_site_deployment):
    # Prepare: a key made in a folder of its own, never registered
    d = one_site_deployment
    folder = init_site(d.workdir / "rogue-site", "rogue-site")
    rogue = Site(7, d.sites[0].data_dir, folder.root)
    # Execute
    proc = d.start_supernode(rogue, name="rogue", pinned=False, max_wait_s=20)
    code = proc.wait(timeout=120)
    # Assert
    assert code != 0
    log = (d.workdir / "logs" / "rogue.log").read_text()
    assert "Failed to activate SuperNode" in log
    assert d.online_sites() == 1  # the registered site, and only it


@pytest.mark.timeout(180)
def test_plaintext_clients_cannot_connect(one_site_deployment):
    # Prepare
    d = one_site_deployment
    plain = Site(0, d.sites[0].data_dir, d.sites[0].folder)
    # Execute: a SuperNode without TLS, holding the registered key
    proc = d.start_supernode(plain, insecure=True, name="plaintext", max_wait_s=15)
    code = proc.wait(timeout=120)
    with socket.create_connection((LOOPBACK, d.ports.gate), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        answer = sock.recv(200)
    # Assert
    assert code != 0
    assert not answer.startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context(cafile=str(d.certs.ca_cert))
    with (
        socket.create_connection((LOOPBACK, d.ports.gate), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.timeout(120)
def test_every_service_answers_its_healthcheck(one_site_deployment):
    # Prepare
    d = one_site_deployment
    site = d.sites[0]
    # Execute
    health = {
        "superlink": probe_grpc(f"{LOOPBACK}:{d.ports.superlink_health}"),
        "superexec": probe_grpc(f"{LOOPBACK}:{d.ports.superexec_health}"),
        "site-0": probe_grpc(f"{LOOPBACK}:{site.health_port}"),
        "fleet-gate": probe_https(d.fleet_address, str(d.certs.ca_cert)),
    }
    # Assert
    assert health == dict.fromkeys(health, True)
    assert not probe_grpc(f"{LOOPBACK}:1", timeout_s=1.0)  # nothing there
