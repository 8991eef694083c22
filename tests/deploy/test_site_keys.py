"""Site-made keys: made and kept in the site folder, only the public half travels."""

import base64
import json
import stat
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_ssh_private_key,
    load_ssh_public_key,
)
from typer.testing import CliRunner

from fedmed.cli.site import site_app
from fedmed.deploy.certs import ensure_certificates
from fedmed.deploy.kit import write_site_kit
from fedmed.deploy.registry import SiteRegistry
from fedmed.deploy.site_admin import add_site
from fedmed.deploy.site_keys import (
    SiteFolder,
    SiteKeyError,
    init_site,
    key_fingerprint,
    read_public_key,
    rotate_site_key,
)


class FakeControlApi:
    """``flwr supernode register|unregister`` stand-in recording what it was sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.next_id = 100

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        if args[:2] == ("supernode", "register"):
            with open(args[2], "rb") as fh:
                self.sent.append(fh.read())
            self.next_id += 1
            reply = {"success": True, "node-id": self.next_id}
        else:
            reply = {"success": True}
        return subprocess.CompletedProcess(args, 0, json.dumps(reply), "")


def secret_material(folder: SiteFolder) -> list[bytes]:
    """Byte strings that identify the private key: the file and its scalar."""
    key = load_ssh_private_key(folder.key.read_bytes(), None)
    scalar = key.private_numbers().private_value.to_bytes(48, "big")
    blob = folder.key.read_bytes()
    return [blob, scalar, scalar.hex().encode(), base64.b64encode(scalar)]


def test_site_init_makes_a_p384_pair_readable_by_the_owner_only(tmp_path):
    # Execute
    folder = init_site(tmp_path / "hospital-a", "hospital-a")
    # Assert
    private = load_ssh_private_key(folder.key.read_bytes(), None)
    public = load_ssh_public_key(folder.public_key.read_bytes())
    assert isinstance(private.curve, ec.SECP384R1)
    assert private.public_key() == public
    assert stat.S_IMODE(folder.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.root.stat().st_mode) == 0o700
    assert folder.public_key.read_text().split()[2] == "hospital-a"
    with pytest.raises(SiteKeyError, match="already has a key"):
        init_site(folder.root, "hospital-a")


def test_a_site_key_never_leaves_the_folder_it_was_made_in(tmp_path):
    # Prepare: a hospital and a coordinator, each with its own folder
    site_dir, coordinator = tmp_path / "hospital-a", tmp_path / "coordinator"
    result = CliRunner().invoke(
        site_app, ["init", "--folder", str(site_dir), "--name", "hospital-a"]
    )
    assert result.exit_code == 0, result.output
    folder = SiteFolder(site_dir)
    secrets = secret_material(folder)
    layout = ensure_certificates(coordinator / "certs")
    (site_dir / "ca.crt").write_bytes(layout.ca_cert.read_bytes())
    (tmp_path / "data").mkdir()
    # Execute: everything that crosses to the coordinator, and the site's kit
    inbox = coordinator / "incoming" / "hospital-a.pub"
    inbox.parent.mkdir(parents=True)
    inbox.write_bytes(folder.public_key.read_bytes())
    control_api = FakeControlApi()
    registry = SiteRegistry(coordinator / "state" / "sites.json")
    add_site(control_api, registry, inbox)
    write_site_kit(folder, "hub.example.org:9092", tmp_path / "data", 0)
    # Assert: no byte string of the private key anywhere outside its folder
    outside = [
        p for p in tmp_path.rglob("*") if p.is_file() and site_dir not in p.parents
    ]
    assert outside, "the coordinator wrote nothing?"
    for path in outside:
        content = path.read_bytes()
        assert not any(s in content for s in secrets), path
    assert all(not any(s in sent for s in secrets) for sent in control_api.sent)
    inside = [p.name for p in site_dir.iterdir()]
    assert sorted(inside) == [
        ".env",
        "ca.crt",
        "compose.yml",
        "site.key",
        "site.pub",
        "trusted-apps.txt",
    ]
    kit = (site_dir / "compose.yml").read_text()
    assert "site.key:/site/site.key:ro" in kit and str(tmp_path) not in kit
    assert "BEGIN OPENSSH PRIVATE KEY" not in registry.path.read_text()


def test_a_private_key_offered_for_registration_is_refused(tmp_path):
    # Prepare
    folder = init_site(tmp_path / "site", "site-a")
    registry = SiteRegistry(tmp_path / "sites.json")
    # Execute / Assert
    with pytest.raises(SiteKeyError, match="holds a PRIVATE key"):
        add_site(FakeControlApi(), registry, folder.key)
    assert not registry.path.exists()


def test_rotation_replaces_the_pair_and_keeps_the_name(tmp_path):
    # Prepare
    folder = init_site(tmp_path / "site", "site-b")
    old_public = read_public_key(folder.public_key)
    # Execute
    rotate_site_key(folder.root)
    # Assert
    new_public = read_public_key(folder.public_key)
    assert key_fingerprint(new_public) != key_fingerprint(old_public)
    assert new_public.split()[2] == "site-b"
    private = load_ssh_private_key(folder.key.read_bytes(), None)
    assert private.public_key() == load_ssh_public_key(new_public.encode())
    assert stat.S_IMODE(folder.key.stat().st_mode) == 0o600


def test_fingerprint_matches_openssh(tmp_path):
    # Prepare
    folder = init_site(tmp_path / "site", "site-c")
    keygen = (
        subprocess.run(
            ["ssh-keygen", "-lf", str(folder.public_key)],
            capture_output=True,
            text=True,
        )
        if _has_ssh_keygen()
        else None
    )
    # Execute
    fingerprint = key_fingerprint(read_public_key(folder.public_key))
    # Assert
    assert fingerprint.startswith("SHA256:") and len(fingerprint) == 7 + 43
    if keygen is not None:
        assert fingerprint in keygen.stdout


def _has_ssh_keygen() -> bool:
    import shutil

    return shutil.which("ssh-keygen") is not None
