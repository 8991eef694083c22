"""The site register: node ids over time, rotation, removal, attribution."""

import json

import pytest

from fedmed.deploy.registry import (
    REGISTRY_ENV,
    RegistryError,
    SiteRegistry,
    site_of_node,
)
from fedmed.deploy.site_admin import add_site, remove_site, rotate_site
from fedmed.deploy.site_keys import init_site, rotate_site_key
from tests.deploy.test_site_keys import FakeControlApi


@pytest.fixture
def coordinator(tmp_path):
    """Two sites made in their own folders, registered through a fake Control API."""
    control_api = FakeControlApi()
    registry = SiteRegistry(tmp_path / "state" / "sites.json")
    folders = [init_site(tmp_path / n, n) for n in ("hospital-a", "hospital-b")]
    for folder in folders:
        add_site(control_api, registry, folder.public_key)
    return control_api, registry, folders


def test_sites_get_node_ids_and_are_found_by_them(coordinator):
    # Prepare
    _, registry, _ = coordinator
    # Execute
    reread = SiteRegistry(registry.path)
    # Assert
    assert {n: r.node_id for n, r in reread.sites.items()} == {
        "hospital-a": 101,
        "hospital-b": 102,
    }
    assert site_of_node(102, registry.path) == "hospital-b"
    assert site_of_node(999, registry.path) is None


def test_rotation_retires_the_old_node_but_keeps_attributing_it(
    coordinator, monkeypatch
):
    # Prepare
    control_api, registry, folders = coordinator
    rotate_site_key(folders[0].root)
    # Execute
    old, new = rotate_site(control_api, registry, "hospital-a", folders[0].public_key)
    # Assert
    assert (old, new) == (101, 103)
    monkeypatch.setenv(REGISTRY_ENV, str(registry.path))
    assert site_of_node(101) == "hospital-a" and site_of_node(103) == "hospital-a"
    payload = json.loads(registry.path.read_text())
    assert payload["sites"]["hospital-a"]["retired_node_ids"] == [101]


def test_removed_site_cannot_be_rotated_and_its_key_cannot_return(coordinator):
    # Prepare
    control_api, registry, folders = coordinator
    # Execute
    node_id = remove_site(control_api, registry, "hospital-b")
    # Assert
    assert node_id == 102
    assert SiteRegistry(registry.path).sites["hospital-b"].status == "removed"
    assert site_of_node(102, registry.path) == "hospital-b"
    with pytest.raises(RegistryError, match="no active site 'hospital-b'"):
        rotate_site(control_api, registry, "hospital-b", folders[1].public_key)
    with pytest.raises(RegistryError, match="already the key of site 'hospital-b'"):
        add_site(control_api, registry, folders[1].public_key)


def test_one_key_one_site_and_one_name_one_active_site(coordinator, tmp_path):
    # Prepare
    control_api, registry, folders = coordinator
    twin = init_site(tmp_path / "twin", "hospital-a")
    # Execute / Assert
    with pytest.raises(RegistryError, match="already the key of site 'hospital-a'"):
        add_site(control_api, registry, folders[0].public_key, name="hospital-c")
    with pytest.raises(RegistryError, match="already registered as node 101"):
        add_site(control_api, registry, twin.public_key)
    assert len(control_api.sent) == 2  # nothing reached the SuperLink


def test_missing_or_corrupt_register_is_a_clear_error(tmp_path, monkeypatch):
    # Prepare
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    corrupt = tmp_path / "sites.json"
    corrupt.write_text("{not json")
    # Execute / Assert
    with pytest.raises(FileNotFoundError, match=REGISTRY_ENV):
        site_of_node(1)
    with pytest.raises(RegistryError, match="not a fedmed site register"):
        site_of_node(1, corrupt)
