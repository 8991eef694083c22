"""Shared test setup: hermetic, offline, single-threaded, small."""

from __future__ import annotations

import os

# Set before any library import reads them: nothing may reach a hub or phone home.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Per-test config homes so Flower/Ultralytics never write to ~ or download."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("FLWR_HOME", str(home / "flwr"))
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(home / "yolo"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
