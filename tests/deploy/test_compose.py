"""docker-compose.yml: parses, is generated, mounts only files that exist."""

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedmed.cli.deploy import deploy_app
from fedmed.deploy.certs import ensure_certificates
from fedmed.deploy.compose import (
    REGISTER,
    SUPERLINK,
    compose_spec,
    interpolate,
    load_compose,
    mounted_files,
    render_compose,
    site_service,
)

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"


def site_services(spec: dict) -> list[str]:
    return sorted(n for n in spec["services"] if n.startswith("site-"))


def test_committed_compose_is_the_generated_three_site_topology():
    # Execute
    spec = load_compose(COMPOSE)
    # Assert
    assert COMPOSE.read_text() == render_compose(3)
    assert site_services(spec) == ["site-0", "site-1", "site-2"]
    command = spec["services"][SUPERLINK]["command"]
    assert "--enable-supernode-auth" in command and "--insecure" not in command
    assert "--ssl-certfile" in command and "--database" in command


def test_every_link_uses_tls_and_each_site_its_own_key_and_data():
    # Prepare
    spec = load_compose(COMPOSE)
    # Execute
    sites = [spec["services"][site_service(k)] for k in range(3)]
    # Assert
    for k, site in enumerate(sites):
        command = site["command"]
        assert "--insecure" not in command
        assert command[command.index("--root-certificates") + 1] == "/certs/ca.crt"
        assert f"./certs/sites/site_{k}.key:/keys/site.key:ro" in site["volumes"]
        assert f'data-dir="/data/site_{k}" site-id={k}' in command
        assert not any(
            "site_" in v and ".key" in v and f"site_{k}" not in v
            for v in site["volumes"]
        )
    serverapp = spec["services"]["serverapp"]["command"]
    assert "--root-certificates" in serverapp and "--insecure" not in serverapp


def test_mounted_files_exist_once_certs_are_written(tmp_path):
    # Prepare: a copy of the compose file next to freshly written certificates
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    ensure_certificates(tmp_path / "certs", 3)
    for k in range(3):
        (tmp_path / "data" / "dermamnist" / f"site_{k}").mkdir(parents=True)
    (tmp_path / "data" / "dermamnist" / "heldout").mkdir()
    (tmp_path / "runs").mkdir()
    spec = load_compose(tmp_path / "docker-compose.yml")
    # Execute
    mounts = mounted_files(spec)
    # Assert
    missing = [
        p for paths in mounts.values() for p in paths if not (tmp_path / p).exists()
    ]
    assert not missing
    registered = {Path(p).name for p in mounts[REGISTER] if p.endswith(".pub")}
    assert registered == {f"site_{k}.pub" for k in range(3)}
    for name, service in spec["services"].items():
        build = service.get("build")
        if build:
            assert (REPO / build["context"] / build["dockerfile"]).is_file(), name


def test_mounted_data_folders_follow_environment_overrides():
    # Prepare
    spec = compose_spec(2)
    # Execute
    mounts = mounted_files(spec, {"FEDMED_SITE_1_DATA": "/srv/hospital-b"})
    # Assert
    assert "/srv/hospital-b" in mounts[site_service(1)]
    assert "./data/dermamnist/site_0" in mounts[site_service(0)]
    assert interpolate("${A:-x}/${B}", {"B": "y"}) == "x/y"


def test_roles_and_gpu_reservations_are_per_site():
    # Execute
    spec = compose_spec(
        3,
        roles=["image-provider", "image-provider", "knowledge-provider"],
        gpu_sites={2},
    )
    # Assert
    last = spec["services"][site_service(2)]
    assert 'role="knowledge-provider"' in " ".join(last["command"])
    assert last["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 1
    assert "deploy" not in spec["services"][site_service(0)]
    with pytest.raises(ValueError, match="expected 3 roles"):
        compose_spec(3, roles=["image-provider"])


def test_compose_command_writes_n_sites(tmp_path):
    # Execute
    result = CliRunner().invoke(
        deploy_app, ["compose", "--sites", "4", "--out", str(tmp_path / "c.yml")]
    )
    # Assert
    assert result.exit_code == 0, result.output
    assert site_services(load_compose(tmp_path / "c.yml"))[-1] == "site-3"


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
