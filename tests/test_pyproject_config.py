"""`flwr run .` only accepts overrides of keys that pyproject.toml declares."""

import dataclasses
import tomllib
from pathlib import Path

from fedmed.config import section_keys
from fedmed.platform_config import PlatformConfig
from fedmed.tasks.classify.config import ClassifyConfig

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _flat(table, prefix=""):
    out = {}
    for key, value in table.items():
        name = f"{prefix}.{key}" if prefix else key
        out.update(_flat(value, name) if isinstance(value, dict) else {name: value})
    return out


def test_pyproject_declares_every_platform_and_classify_key_with_its_default():
    declared = _flat(tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"])
    for field in dataclasses.fields(PlatformConfig):
        key = "task.name" if field.name == "task_name" else field.name.replace("_", "-")
        assert declared[key] == field.default, key
    for key in section_keys(ClassifyConfig, "classify"):
        field = key.split(".", 1)[1].replace("-", "_")
        assert declared[key] == ClassifyConfig.__dataclass_fields__[field].default, key
