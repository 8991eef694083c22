"""constraints.txt: the exact environment `make install` builds and CI tests.

Without it a fresh install takes whatever PyPI holds that day, so a package
released overnight changes what the suite runs against (and what the images'
package lists must say) without a line of this project changing.
"""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from fedmed.deploy.image_requirements import (
    IMAGES,
    RENAMED,
    canonical,
    read_pins,
    requirements_file,
)

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "constraints.txt"


def _direct_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    texts = project["dependencies"] + project["optional-dependencies"]["dev"]
    return [Requirement(t) for t in texts]


def test_every_line_pins_one_exact_version():
    # Execute
    lines = [
        line
        for line in LOCK.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Assert
    assert lines
    assert all(re.fullmatch(r"[A-Za-z0-9][\w.-]*==[0-9][\w.+!-]*", x) for x in lines)
    names = [canonical(x.partition("==")[0]) for x in lines]
    assert len(names) == len(set(names))
    assert "fedmed" not in names


def test_every_direct_dependency_is_locked_inside_its_declared_range():
    # Prepare
    pins = read_pins(LOCK)
    # Execute
    outside = {
        req.name: pins.get(canonical(req.name))
        for req in _direct_requirements()
        if pins.get(canonical(req.name)) not in req.specifier
    }
    # Assert
    assert outside == {}, "run: make lock"


def test_image_package_lists_pin_what_the_lock_pins():
    # Prepare
    lock = read_pins(LOCK)
    renamed_back = {canonical(new): old for old, new in RENAMED.items()}
    # Execute
    differing = {
        (image, name): (version, lock.get(renamed_back.get(name, name)))
        for image in IMAGES
        for name, version in read_pins(requirements_file(image)).items()
        if lock.get(renamed_back.get(name, name)) != version
    }
    # Assert
    assert differing == {}, "run: python -m fedmed.deploy.image_requirements --write"
