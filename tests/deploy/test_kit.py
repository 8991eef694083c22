"""The site kit: written into the site folder, only when the folder is ready."""

import pytest
import yaml
from typer.testing import CliRunner

from fedmed.cli.site import site_app
from fedmed.deploy.app_pin import read_trusted_apps
from fedmed.deploy.compose import interpolate
from fedmed.deploy.kit import kit_environment, write_site_kit
from fedmed.deploy.site_keys import SiteFolder, SiteKeyError, init_site


def read_env(path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines())
    return {k: v.strip("'") for k, v in pairs}


def test_kit_writes_compose_and_env_that_resolve_to_the_site(tmp_path):
    # Prepare
    folder = init_site(tmp_path / "hospital-a", "hospital-a")
    folder.ca_cert.write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "data").mkdir()
    # Execute
    compose = write_site_kit(
        folder, "hub.example.org:9092", tmp_path / "data", 2, role="image-provider"
    )
    # Assert
    env = read_env(folder.root / ".env")
    assert env["FEDMED_SUPERLINK"] == "hub.example.org:9092"
    assert env["FEDMED_SITE_DATA"] == str(tmp_path / "data")
    command = yaml.safe_load(compose.read_text())["services"]["supernode"]["command"]
    node_config = interpolate(command[command.index("--node-config") + 1], env)
    assert node_config == 'data-dir="/data" site-id=2 role="image-provider"'
    assert read_trusted_apps(folder.trusted_apps) == frozenset()  # trusts nothing yet


def test_kit_refuses_a_folder_without_key_or_ca(tmp_path):
    # Prepare
    (tmp_path / "data").mkdir()
    bare = SiteFolder(tmp_path / "bare")
    made = init_site(tmp_path / "made", "made")
    # Execute / Assert
    with pytest.raises(SiteKeyError, match="fedmed site init"):
        write_site_kit(bare, "h:9092", tmp_path / "data", 0)
    with pytest.raises(SiteKeyError, match="copy the coordinator's ca.crt"):
        write_site_kit(made, "h:9092", tmp_path / "data", 0)
    with pytest.raises(ValueError, match="HOST:PORT"):
        kit_environment("no-port", tmp_path, 0)
    with pytest.raises(ValueError, match="role 'spy'"):
        kit_environment("h:1", tmp_path, 0, role="spy")


def test_site_commands_init_trust_and_kit(tmp_path):
    # Prepare
    runner = CliRunner()
    folder = tmp_path / "site"
    (tmp_path / "data").mkdir()
    # Execute
    steps = [
        ["init", "--folder", str(folder), "--name", "hospital-b"],
        ["trust", "cd" * 32, "--folder", str(folder), "--note", "fedmed 0.1.0"],
    ]
    results = [runner.invoke(site_app, step) for step in steps]
    (folder / "ca.crt").write_text("ca")
    results.append(
        runner.invoke(
            site_app,
            ["kit", "--folder", str(folder), "--superlink", "hub:9092"]
            + ["--data", str(tmp_path / "data"), "--site-id", "1"],
        )
    )
    # Assert
    assert [r.exit_code for r in results] == [0, 0, 0], [r.output for r in results]
    assert "SHA256:" in results[0].output
    assert read_trusted_apps(folder / "trusted-apps.txt") == frozenset({"cd" * 32})
    assert (folder / "compose.yml").is_file() and (folder / ".env").is_file()
