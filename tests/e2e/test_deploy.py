"""A real deployment on 127.0.0.1: TLS, SuperNode authentication, 3 sites, 2 rounds.

Every process is a real ``flower-superlink`` / ``flower-supernode``; nothing
leaves the loopback interface and every process is stopped by id.
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

from fedmed.deploy.certs import ensure_certificates, write_site_keys
from fedmed.deploy.local import LOOPBACK, LocalDeployment, Site, free_port
from tests.contracts import check_contract

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def synth_sites(out: Path, sites: int = 3) -> Path:
    """Synthetic DermaMNIST for ``sites`` hospitals (+ heldout)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fedmed",
            "data",
            "synth",
            "dermamnist",
            "--out",
            str(out),
            "--sites",
            str(sites),
            "--samples-per-site",
            "200",
        ],
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


def records(run: Path) -> list[dict]:
    return [
        json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x
    ]


@pytest.mark.timeout(600)
def test_three_sites_train_two_rounds_over_tls_with_node_auth(tmp_path):
    # Prepare
    data = synth_sites(tmp_path / "data")
    run, work = tmp_path / "run", tmp_path / "work"
    tiny = REPO / "configs" / "classify_tiny.toml"
    command = [
        sys.executable,
        "-m",
        "fedmed.deploy",
        "local",
        "--sites",
        "3",
        "--rounds",
        "2",
        "--task",
        "classify",
        "--run-config",
        str(tiny),
        "--data-dir",
        str(data),
        "--out",
        str(run),
        "--workdir",
        str(work),
        "--timeout",
        "540",
    ]
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
    assert all(sorted(r["sites"]) == ["0", "1", "2"] for r in train)
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
    assert "round 2 train: 3 sites" in done.stdout
    assert not processes_using(work), "deployment processes outlived the command"
    check_contract("run", run)


@pytest.fixture(scope="module")
def one_site_deployment(tmp_path_factory):
    """SuperLink (TLS + node auth) with site 0 registered and connected."""
    work = tmp_path_factory.mktemp("refusal")
    layout = ensure_certificates(work / "certs", 1)
    write_site_keys(layout, 7)  # a key nobody registered
    (work / "site").mkdir()
    site = Site(0, work / "site", free_port())
    with LocalDeployment(work / "run", layout, [site]) as deployment:
        deployment.start()
        deadline = time.monotonic() + 60
        while deployment.online_sites() < 1 and time.monotonic() < deadline:
            time.sleep(1)
        yield deployment
    assert not processes_using(work / "run")


@pytest.mark.timeout(120)
def test_supernode_with_unlisted_key_is_refused(one_site_deployment):
    # Prepare
    d = one_site_deployment
    rogue = Site(7, d.sites[0].data_dir, free_port())
    # Execute
    proc = d.start_supernode(rogue, name="rogue", max_wait_s=20)
    code = proc.wait(timeout=60)
    # Assert
    assert code != 0
    log = (d.workdir / "logs" / "rogue.log").read_text()
    assert "Failed to activate SuperNode" in log
    assert d.online_sites() == 1  # the registered site, and only it


@pytest.mark.timeout(120)
def test_plaintext_clients_cannot_connect(one_site_deployment):
    # Prepare
    d = one_site_deployment
    plain = Site(0, d.sites[0].data_dir, free_port())
    # Execute: a SuperNode without TLS, holding a registered key
    proc = d.start_supernode(plain, insecure=True, name="plaintext", max_wait_s=15)
    code = proc.wait(timeout=60)
    with socket.create_connection((LOOPBACK, d.superlink_port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        answer = sock.recv(200)
    # Assert
    assert code != 0
    assert not answer.startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context(cafile=str(d.certs.ca_cert))
    with (
        socket.create_connection((LOOPBACK, d.superlink_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
