"""The warm ClientApp runner: one app per process, its code from the FAB, pins kept."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from clients.warm_worker import WarmApps, fab_packages, forget_modules
from fedmed.deploy.app_pin import UntrustedApp, add_trusted_apps, build_fab

REPO = Path(__file__).resolve().parents[2]
ROGUE = REPO / "tests" / "e2e" / "rogue_app"


def write_package(root: Path, name: str, version: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text(f"VERSION = {version!r}\n")
    (root / name / "part.py").write_text("from . import VERSION as OWNER\n")


def test_fab_packages_names_the_top_level_code_of_a_bundle():
    # Execute
    packages = fab_packages(build_fab(ROGUE))
    # Assert
    assert packages == {"rogue_app"}


def test_forgotten_packages_are_imported_again_from_the_bundle_folder(
    tmp_path, monkeypatch
):
    # Prepare: the site's installed copy of a package is imported first
    installed, bundle = tmp_path / "site-env", tmp_path / "fab"
    write_package(installed, "warmpkg", "installed")
    write_package(bundle, "warmpkg", "bundle")
    monkeypatch.syspath_prepend(str(installed))
    import warmpkg.part

    assert warmpkg.part.OWNER == "installed"
    # Execute: the bundle folder goes first, as Flower's loader puts it
    gone = forget_modules({"warmpkg"})
    monkeypatch.syspath_prepend(str(bundle))
    import warmpkg.part as again

    # Assert
    assert sorted(gone) == ["warmpkg", "warmpkg.part"]
    assert again.OWNER == "bundle"
    forget_modules({"warmpkg"})


def test_an_unpinned_bundle_is_refused_before_any_of_its_code_is_imported(tmp_path):
    # Prepare
    pins = add_trusted_apps(tmp_path / "trusted-apps.txt", [])
    apps = WarmApps(pins)
    fab = SimpleNamespace(content=build_fab(ROGUE), hash_str="claimed")
    run = SimpleNamespace(fab_id="fedmed/rogue", fab_version="1.0.0")
    # Execute / Assert
    with pytest.raises(UntrustedApp, match="will not run here"):
        apps.load(run, fab)
    assert "rogue_app" not in sys.modules
    assert apps.fab_hash is None and apps.serves("any")


def test_a_runner_that_loaded_an_app_serves_only_that_app(tmp_path):
    # Prepare
    apps = WarmApps(tmp_path / "trusted-apps.txt")
    apps.fab_hash = "a" * 64
    # Execute / Assert
    assert apps.serves("a" * 64)
    assert not apps.serves("b" * 64)
