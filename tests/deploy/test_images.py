"""Dockerfiles: non-root, pinned, no secrets in the build context."""

import re
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))


def test_three_images_exist():
    assert [p.name for p in DOCKERFILES] == [
        "serverapp.Dockerfile",
        "superlink.Dockerfile",
        "supernode.Dockerfile",
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_as_non_root_and_copies_no_secrets(dockerfile):
    # Prepare
    text = dockerfile.read_text()
    # Execute
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    copies = re.findall(r"^COPY .*", text, flags=re.M)
    # Assert
    assert users and users[-1] not in ("root", "0")
    assert not any(re.search(r"cert|\.key|\.pem|data|runs", c) for c in copies)
    assert "--constraint /tmp/constraints.txt" in text


def test_constraints_pin_the_installed_flower_and_torch_is_pinned():
    # Prepare
    pins = dict(
        line.split("==")
        for line in (REPO / "docker" / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    node = (REPO / "docker" / "supernode.Dockerfile").read_text()
    # Assert
    assert pins["flwr"] == version("flwr")
    assert f"ARG TORCH_VERSION={version('torch').split('+')[0]}" in node
    assert "ARG TORCH_VARIANT=cpu" in node


def test_dockerignore_keeps_certificates_and_data_out_of_the_context():
    # Prepare
    rules = (REPO / ".dockerignore").read_text().splitlines()
    # Assert
    assert [r for r in rules if r and not r.startswith("#")][0] == "**"
    assert {"**/*.key", "**/*.pem", "**/*.crt"} <= set(rules)
    assert not any(
        r.startswith("!") and ("cert" in r or "data" in r or "runs" in r) for r in rules
    )
