"""`flwr run .` only accepts overrides of keys that pyproject.toml declares."""

import tomllib
from pathlib import Path

from fedmed.config import parse_platform, parse_section
from fedmed.config.app_config import declared_run_config
from fedmed.tasks import list_tasks, task_class

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _flat(table, prefix=""):
    out = {}
    for key, value in table.items():
        name = f"{prefix}.{key}" if prefix else key
        out.update(_flat(value, name) if isinstance(value, dict) else {name: value})
    return out


def _declared_in_pyproject():
    app = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    return _flat(app)


def test_pyproject_declares_every_platform_and_task_key_with_its_default():
    declared = _declared_in_pyproject()
    expected = declared_run_config()
    missing = sorted(set(expected) - set(declared))
    stale = sorted(set(declared) - set(expected))
    assert not missing and not stale, (
        "run `python -m fedmed.config.app_config --write`; "
        f"missing {missing}, stale {stale}"
    )
    for key, value in expected.items():
        assert declared[key] == value and type(declared[key]) is type(value), key


def test_every_task_is_declared_and_its_defaults_parse_back():
    declared = _declared_in_pyproject()
    parse_platform(declared, list_tasks())
    for name in list_tasks():
        assert any(key.startswith(f"{name}.") for key in declared), name
        parse_section(task_class(name).config_class, declared, name)
