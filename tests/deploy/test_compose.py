"""Compose files: coordinator services and the site kit, parsed and checked."""

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedmed.cli.deploy import deploy_app
from fedmed.deploy.certs import ensure_certificates
from fedmed.deploy.compose import (
    ADMIN,
    GATE,
    GATE_PORT,
    HEALTH,
    SUPEREXEC,
    SUPERLINK,
    SUPERLINK_PORT,
    interpolate,
    load_compose,
    mounted_files,
    render_coordinator,
    render_site,
    site_spec,
)
from fedmed.deploy.fleet_gate import FLEET_CALL

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
SITE_KIT = REPO / "docker" / "site.compose.yml"


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_committed_files_are_the_generated_ones():
    # Assert
    assert COMPOSE.read_text() == render_coordinator()
    assert SITE_KIT.read_text() == render_site()


def test_coordinator_has_no_site_services_and_publishes_only_the_gate():
    # Prepare
    spec = load_compose(COMPOSE)
    services = spec["services"]
    # Execute
    published = {name: service.get("ports", []) for name, service in services.items()}
    # Assert
    assert set(services) == {SUPERLINK, SUPEREXEC, GATE, ADMIN}
    assert published[GATE] == [f"{GATE_PORT}:{GATE_PORT}"]
    assert published[SUPERLINK] == [f"127.0.0.1:{SUPERLINK_PORT}:{SUPERLINK_PORT}"]
    assert published[SUPEREXEC] == [] and published[ADMIN] == []
    assert spec["networks"]["internal"] == {"internal": True}
    assert services[SUPEREXEC]["networks"] == ["internal"]
    assert "sites" not in services[SUPERLINK]["networks"]
    assert "register-sites" not in services and "superlink:8000" not in str(
        {k: v for k, v in services.items() if k not in (SUPEREXEC, GATE, ADMIN)}
    )
    assert services[ADMIN]["profiles"] == ["admin"]  # never started by 'up'


def test_superexec_secret_is_a_compose_secret_on_both_ends():
    # Prepare
    spec = load_compose(COMPOSE)
    link, execu = spec["services"][SUPERLINK], spec["services"][SUPEREXEC]
    # Assert
    assert spec["secrets"]["superexec-secret"] == {"file": "./certs/superexec.secret"}
    for service in (link, execu):
        assert service["secrets"] == ["superexec-secret"]
        assert (
            option(service["command"], "--superexec-auth-secret-file")
            == "/run/secrets/superexec-secret"
        )
    assert option(link["command"], "--isolation") == "process"  # else ignored
    assert "--enable-supernode-auth" in link["command"]
    assert "--insecure" not in link["command"] + execu["command"]


def test_every_long_running_service_has_a_healthcheck_on_its_health_address():
    # Prepare
    services = {
        **load_compose(COMPOSE)["services"],
        **load_compose(SITE_KIT)["services"],
    }
    # Execute / Assert
    for name, service in services.items():
        if name == ADMIN:
            continue
        probe = service["healthcheck"]["test"]
        assert probe[:4] == ["CMD", "python", "-m", "fedmed.deploy.health"], name
        if name == GATE:
            assert probe[4:6] == ["https", f"127.0.0.1:{GATE_PORT}"]
        else:
            address = f"127.0.0.1:{HEALTH[name]}"
            assert probe[4:] == ["grpc", address]
            assert option(service["command"], "--health-server-address") == address


def test_gate_forwards_to_the_superlink_on_the_internal_network():
    # Prepare
    gate = load_compose(COMPOSE)["services"][GATE]
    # Assert
    assert gate["entrypoint"] == ["python", "-m", "fedmed.deploy.fleet_gate"]
    assert option(gate["command"], "--upstream") == f"{SUPERLINK}:{SUPERLINK_PORT}"
    assert option(gate["command"], "--upstream-ca") == "/certs/ca.crt"
    assert FLEET_CALL.fullmatch(b"/v1/fleet/pull-messages")


def test_site_kit_needs_its_parameters_and_mounts_only_its_own_folder():
    # Prepare
    spec = load_compose(SITE_KIT)
    node = spec["services"]["supernode"]
    env = {
        "FEDMED_SUPERLINK": "hub.example.org:9092",
        "FEDMED_SITE_ID": "3",
        "FEDMED_SITE_DATA": "/srv/derm",
    }
    # Execute
    command = [interpolate(str(c), env) for c in node["command"]]
    mounts = mounted_files(spec, env)["supernode"]
    # Assert
    assert node["entrypoint"][-1] == "clients.site_supernode"
    assert option(command, "--superlink") == "hub.example.org:9092"
    assert option(command, "--node-config").strip() == 'data-dir="/data" site-id=3'
    assert option(command, "--trusted-apps") == "/site/trusted-apps.txt"
    assert sorted(mounts) == [
        "./ca.crt",
        "./site.key",
        "./trusted-apps.txt",
        "/srv/derm",
    ]
    assert all(v.endswith(":ro") for v in node["volumes"])
    with pytest.raises(ValueError, match="FEDMED_SUPERLINK is required"):
        interpolate(node["command"][3], {})


def test_gpu_site_reserves_one_device():
    # Execute
    service = site_spec(gpu=True)["services"]["supernode"]
    # Assert
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 1
    assert "deploy" not in site_spec()["services"]["supernode"]


def test_coordinator_mounts_exist_once_certs_are_written(tmp_path):
    # Prepare
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    ensure_certificates(tmp_path / "certs")
    for folder in ("state", "runs", "incoming", "data/dermamnist/heldout"):
        (tmp_path / folder).mkdir(parents=True)
    spec = load_compose(tmp_path / "docker-compose.yml")
    # Execute
    mounts = mounted_files(spec)
    # Assert
    missing = [
        p for paths in mounts.values() for p in paths if not (tmp_path / p).exists()
    ]
    assert not missing
    assert "./certs/ca.key" not in {p for paths in mounts.values() for p in paths}
    for name, service in spec["services"].items():
        build = service.get("build")
        if build:
            assert (REPO / build["context"] / build["dockerfile"]).is_file(), name


def test_compose_command_writes_both_files(tmp_path):
    # Execute
    result = CliRunner().invoke(
        deploy_app,
        [
            "compose",
            "--out",
            str(tmp_path / "c.yml"),
            "--site-kit",
            str(tmp_path / "s.yml"),
        ],
    )
    # Assert
    assert result.exit_code == 0, result.output
    assert set(load_compose(tmp_path / "c.yml")["services"]) == {
        SUPERLINK,
        SUPEREXEC,
        GATE,
        ADMIN,
    }
    assert re.search(r"clients\.site_supernode", (tmp_path / "s.yml").read_text())


def test_compose_run_config_is_classify_tiny_with_container_paths():
    # Prepare
    import tomllib

    tiny = tomllib.loads((REPO / "configs" / "classify_tiny.toml").read_text())
    compose_run = tomllib.loads(
        (REPO / "docker" / "classify_tiny.compose.toml").read_text()
    )
    # Assert
    assert {k: compose_run[k] for k in tiny} == tiny
    assert compose_run["data-dir"] == "/data"
    assert compose_run["run-dir"].startswith("/app/runs/")
