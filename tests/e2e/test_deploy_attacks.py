"""The three control-plane attacks on a Flower 1.42 deployment, each refused.

(a) A site holding only ``ca.crt`` registers a SuperNode key of its own.
(b) Someone ``flwr run``s a modified app, whose ClientApp then runs next to
    every site's data.
(c) A rogue ``flower-superexec`` claims the ServerApp's tasks.

The deployment: coordinator (SuperLink on loopback, SuperExec with the shared
secret, Fleet gate) and two sites; site-0 runs the pinning SuperNode, site-1 a
plain ``flower-supernode`` (a site that did not pin: the control showing that
attack (b) is real). Sites' requests go through the gate like any site's.
"""

import json
from pathlib import Path

import pytest

from fedmed.deploy.registration import (
    flower_bin,
    flwr_runner,
    json_reply,
    write_connection,
)
from fedmed.deploy.site_keys import init_site
from fedmed.deploy.topology import Site
from tests.e2e.test_deploy import REPO, deployment_for, processes_using, wait_for

ROGUE_APP = REPO / "tests" / "e2e" / "rogue_app"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """Two registered sites online; site-0 pins the fedmed app, site-1 pins nothing."""
    tmp = tmp_path_factory.mktemp("attacks")
    for k in range(2):
        (tmp / "data" / f"site_{k}").mkdir(parents=True)
    with deployment_for(tmp, tmp / "data", 2) as deployment:
        deployment.start_superlink()
        deployment.start_superexec()
        deployment.start_gate()
        deployment.register_sites()
        deployment.trust_app(REPO)
        deployment.start_supernode(deployment.sites[0])
        deployment.start_supernode(deployment.sites[1], pinned=False)
        deployment.wait_online(2, timeout_s=180)
        yield deployment
    assert not processes_using(tmp / "work")


def site_flwr(deployment, home: Path):
    """The ``flwr`` CLI as a site can use it: the gate's address and ca.crt only."""
    write_connection(home, deployment.fleet_address, deployment.certs.ca_cert)
    return flwr_runner(home, env={**deployment.env(), "FLWR_HOME": str(home)})


@pytest.mark.timeout(300)
def test_a_site_cannot_register_a_key_of_its_own(federation, tmp_path):
    # Prepare: a key made at the site, and the site's view of the SuperLink
    d = federation
    rogue = init_site(tmp_path / "rogue", "rogue")
    flwr = site_flwr(d, tmp_path / "flwr-home")
    # Execute
    reply = json_reply(
        flwr("supernode", "register", str(rogue.public_key), "--format", "json")
    )
    node = d.start_supernode(
        Site(9, d.sites[0].data_dir, rogue.root),
        name="rogue-node",
        pinned=False,
        max_wait_s=20,
    )
    code = node.wait(timeout=120)
    # Assert
    assert reply.get("success") is False
    assert "403" in reply["error-message"]
    assert code != 0
    assert (
        "Failed to activate SuperNode"
        in (d.workdir / "logs" / "rogue-node.log").read_text()
    )
    nodes = json_reply(d.flwr("supernode", "list", "--format", "json"))["nodes"]
    assert len(nodes) == 2
    assert "refused POST b'/v1/control/register-node'" in _gate_log(d)


@pytest.mark.timeout(300)
def test_a_site_cannot_submit_an_app(federation, tmp_path):
    # Prepare
    d = federation
    flwr = site_flwr(d, tmp_path / "flwr-home")
    runs_before = _runs(d)
    # Execute
    reply = json_reply(flwr("run", str(ROGUE_APP), "fedmed", "--format", "json"))
    # Assert
    assert reply.get("success") is False and "403" in reply["error-message"]
    assert _runs(d) == runs_before
    assert "refused POST b'/v1/control/start-run'" in _gate_log(d)


@pytest.mark.timeout(300)
def test_a_site_cannot_attach_a_superexec(federation):
    # Prepare
    d = federation
    # Execute: a SuperExec pointed at the only address a site can reach
    proc = d.spawn("rogue-superexec-site", _superexec_at(d, d.fleet_address))
    code = proc.wait(timeout=120)
    # Assert
    assert code is not None
    assert "refused POST b'/v1/runtime/acquire-task'" in _gate_log(d)


@pytest.mark.timeout(400)
def test_pinned_site_refuses_an_unpinned_app_and_rogue_superexecs_get_no_task(
    federation, tmp_path
):
    # Prepare: someone with the coordinator's Control API (an insider, or a
    # leaked operator account) and two SuperExecs without the right secret
    d = federation
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    wrong = tmp_path / "wrong.secret"
    wrong.write_bytes(b"\x01" * 32)
    rogues = [
        d.spawn("rogue-superexec-nosecret", _superexec_at(d, d.control_address)),
        d.spawn(
            "rogue-superexec-wrong",
            [
                *_superexec_at(d, d.control_address),
                "--superexec-auth-secret-file",
                str(wrong),
            ],
        ),
    ]
    # Execute
    run_id = d.submit(ROGUE_APP, overrides=f"evidence-dir='{evidence}' wait-s=90")
    wait_for(lambda: (evidence / "server-outcome.json").is_file(), 300, "the ServerApp")
    outcome = json.loads((evidence / "server-outcome.json").read_text())
    # Assert (b): the unpinned site ran the rogue code, the pinned one did not
    registry = d.registry
    by_site = {registry.site_of_node(int(n)): r for n, r in outcome["replies"].items()}
    assert (evidence / "executed-at-site-1").is_file()
    assert not (evidence / "executed-at-site-0").exists()
    assert by_site["site-1"] == "ok" and by_site["site-0"].startswith("error")
    assert "is not among this site's" in (d.workdir / "logs" / "site-0.log").read_text()
    # Assert (c): the ServerApp ran on the authenticated SuperExec only
    for rogue in rogues:
        rogue.wait(timeout=120)
    superlink_log = (d.workdir / "logs" / "superlink.log").read_text()
    assert "SuperExec authentication failed" in superlink_log
    for name in ("rogue-superexec-nosecret", "rogue-superexec-wrong"):
        assert "flwr-serverapp" not in (d.workdir / "logs" / f"{name}.log").read_text()
    assert run_id in _runs(d)


def _superexec_at(d, address: str) -> list[str]:
    return [
        flower_bin("flower-superexec"),
        "--runtime-api-address",
        address,
        "--root-certificates",
        str(d.certs.ca_cert),
    ]


def _runs(d) -> set[int]:
    reply = json_reply(d.flwr("ls", "--format", "json"))
    return {int(r["run-id"]) for r in reply.get("runs", [])}


def _gate_log(d) -> str:
    return (d.workdir / "logs" / "fleet-gate.log").read_text()
