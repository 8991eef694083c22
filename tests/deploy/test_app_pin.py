"""App pinning: FAB hashes as flwr builds them, the site's list, the SuperNode hook."""

import shutil
from pathlib import Path

import pytest

from clients.site_supernode import (
    PIN_ENTITY,
    _pinned_get_fab,
    install_app_pin,
    split_arguments,
)
from fedmed.deploy.app_pin import (
    UntrustedApp,
    add_trusted_apps,
    build_fab,
    check_app,
    fab_files,
    fab_sha256,
    read_trusted_apps,
)

REPO = Path(__file__).resolve().parents[2]
ROGUE = REPO / "tests" / "e2e" / "rogue_app"


def test_fab_hash_is_reproducible_and_changes_with_one_byte(tmp_path):
    # Prepare
    app = tmp_path / "rogue_app"
    shutil.copytree(ROGUE, app)
    # Execute
    first, again = build_fab(app), build_fab(app)
    client = app / "rogue_app" / "client.py"
    client.write_text(client.read_text() + "\n# one more line\n")
    changed = build_fab(app)
    # Assert
    assert fab_sha256(first) == fab_sha256(again)
    assert fab_sha256(changed) != fab_sha256(first)


def test_fedmed_fab_carries_app_code_only():
    # Execute: the FAB 'flwr run .' submits, built by Flower's own builder
    names = fab_files(build_fab(REPO))
    # Assert
    tops = {n.split("/")[0] for n in names}
    assert tops == {
        "pyproject.toml",
        "fedmed",
        "clients",
        "server",
        "strategies",
        ".info",
    }
    assert "clients/client_app.py" in names and "server/server_app.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "docs/")) for n in names)
    assert not any(n.endswith((".key", ".crt", ".secret")) for n in names)


def test_pin_file_round_trip_and_bad_lines_are_named(tmp_path):
    # Prepare
    path = tmp_path / "trusted-apps.txt"
    digest = "ab" * 32
    # Execute
    add_trusted_apps(path, [digest.upper()], note="fedmed 0.1.0")
    add_trusted_apps(path, [digest])  # again: not duplicated
    (tmp_path / "bad.txt").write_text(f"{digest}\nnot-a-hash\n")
    # Assert
    assert read_trusted_apps(path) == frozenset({digest})
    assert path.read_text().count(digest) == 1
    with pytest.raises(ValueError, match=r"bad.txt:2: expected a 64-character"):
        read_trusted_apps(tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError, match="fedmed site trust"):
        read_trusted_apps(tmp_path / "missing.txt")


def test_check_app_hashes_the_received_bytes():
    # Prepare
    fab = b"PK fake bundle"
    # Execute / Assert
    assert check_app(fab, frozenset({fab_sha256(fab)})) == fab_sha256(fab)
    with pytest.raises(UntrustedApp, match="not among this site's 1 trusted"):
        check_app(fab + b"!", frozenset({fab_sha256(fab)}))


class FakeFab:
    def __init__(self, content: bytes, verifications: dict) -> None:
        self.hash_str, self.content, self.verifications = (
            "claimed",
            content,
            verifications,
        )


def test_supernode_hook_marks_pinned_fabs_and_strips_others(tmp_path):
    # Prepare
    pin = tmp_path / "trusted-apps.txt"
    good, bad = b"good bundle", b"bad bundle"
    add_trusted_apps(pin, [fab_sha256(good)])
    fabs = {"g": FakeFab(good, {}), "b": FakeFab(bad, {"valid_license": "forged"})}
    get_fab = _pinned_get_fab(lambda fab_hash, run_id: fabs[fab_hash], pin)
    # Execute
    accepted, refused = get_fab("g", 1), get_fab("b", 2)
    # Assert
    assert accepted.verifications == {
        "valid_license": PIN_ENTITY,
        PIN_ENTITY: fab_sha256(good),
    }
    assert refused.verifications == {}  # Flower then replies "FAB not verified"


def test_supernode_hook_replaces_flowers_verification(tmp_path):
    # Prepare
    from flwr.supernode import start_client_internal as node

    pin = tmp_path / "trusted-apps.txt"
    add_trusted_apps(pin, [])
    saved = node._pull_and_store_message, node._verify_fab
    try:
        # Execute
        install_app_pin(pin)
        verify = node._verify_fab
        # Assert
        digest = fab_sha256(b"x")
        assert verify(FakeFab(b"x", {PIN_ENTITY: digest}), {})
        assert not verify(FakeFab(b"y", {PIN_ENTITY: digest}), {})  # bytes swapped
    finally:
        node._pull_and_store_message, node._verify_fab = saved


def test_supernode_needs_a_pin_file(tmp_path):
    # Execute / Assert
    ours, rest = split_arguments(["--superlink", "h:1", "--trusted-apps", "p.txt"])
    assert (ours.trusted_apps, rest) == (Path("p.txt"), ["--superlink", "h:1"])
    with pytest.raises(SystemExit, match="--trusted-apps FILE is required"):
        split_arguments(["--superlink", "h:1"])
    with pytest.raises(FileNotFoundError):
        install_app_pin(tmp_path / "none.txt")
