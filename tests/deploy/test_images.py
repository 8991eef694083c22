"""Dockerfiles: non-root, closed pinned package lists, no Ray, headless OpenCV."""

import re
from importlib.metadata import version
from pathlib import Path

import pytest

from fedmed.deploy.image_requirements import (
    IMAGES,
    image_requirements,
    read_pins,
    render,
    requirements_file,
)

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))


def test_three_images_exist():
    assert [p.name for p in DOCKERFILES] == [
        "serverapp.Dockerfile",
        "superlink.Dockerfile",
        "supernode.Dockerfile",
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_as_non_root_installs_a_pinned_list_and_copies_no_secrets(
    dockerfile,
):
    # Prepare
    text = dockerfile.read_text()
    # Execute
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    copies = re.findall(r"^COPY .*", text, flags=re.M)
    installs = re.findall(r"pip install [^\n]*", text)
    # Assert
    assert users and users[-1] not in ("root", "0")
    assert not any(re.search(r"cert|\.key|\.pem|data|runs|secret", c) for c in copies)
    assert any("--no-deps -r /tmp/requirements.txt" in i for i in installs)
    assert all("--no-deps" in i or "--index-url" in i for i in installs)


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_committed_package_lists_are_current_and_closed(image):
    # Execute
    committed = requirements_file(image).read_text()
    pins = read_pins(requirements_file(image))
    # Assert
    assert committed == render(image), (
        "run: python -m fedmed.deploy.image_requirements --write"
    )
    assert pins["flwr"] == version("flwr")
    assert "ray" not in pins and "opencv-python" not in pins
    assert all(re.fullmatch(r"[0-9][\w.+!-]*", v) for v in pins.values())


def test_app_image_has_headless_opencv_and_no_torch_of_its_own():
    # Execute
    pins = image_requirements("app")
    node = (REPO / "docker" / "supernode.Dockerfile").read_text()
    # Assert
    assert pins["opencv-python-headless"] == version("opencv-python")
    assert "torch" not in pins and "torchvision" not in pins
    assert f"ARG TORCH_VERSION={version('torch').split('+')[0]}" in node
    assert "ARG TORCH_VARIANT=cpu" in node
    assert 'ENTRYPOINT ["python", "-m", "clients.site_supernode"]' in node


def test_dockerignore_keeps_certificates_and_data_out_of_the_context():
    # Prepare
    rules = (REPO / ".dockerignore").read_text().splitlines()
    # Assert
    assert [r for r in rules if r and not r.startswith("#")][0] == "**"
    assert {"**/*.key", "**/*.pem", "**/*.crt"} <= set(rules)
    assert not any(
        r.startswith("!") and ("cert" in r or "data" in r or "runs" in r) for r in rules
    )
