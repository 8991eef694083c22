"""Run-config layering: what a command line turns into one flat run config.

``fedmed simulate`` and ``fedmed deploy local`` build the run config every
site and the server read the same way: defaults < run-config TOML files
(``--run-config``) < ``--set key=value`` overrides < the command's own
flags (rounds, run directory, data folder, resume).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

from fedmed.config.sections import ConfigError, Scalar

FLAG_KEYS = {
    "num-server-rounds": "--rounds",
    "run-dir": "--out",
    "data-dir": "--data-dir",
}
"""Run-config keys a command also takes as its own flag."""

DEFAULT_ROUNDS = 3
DEFAULT_RUN_DIR = "runs/sim"


def resolve_run_config(
    task_name: str,
    *,
    rounds: int | None,
    out: Path | None,
    data_dir: Path | None,
    files: list[Path],
    overrides: Mapping[str, Scalar],
    resume: bool,
) -> dict[str, Scalar]:
    """Layer the run config: defaults < run-config files < ``--set`` < CLI flags.

    A flag left out (``None``) keeps what the files or ``--set`` say; a flag
    and a ``--set`` of the same key that disagree are an error, since either
    answer would silently drop what the user typed.
    """
    config: dict[str, Scalar] = {
        "task.name": task_name,
        "data-dir": f"data/{task_name}",
        "num-server-rounds": DEFAULT_ROUNDS,
        "run-dir": DEFAULT_RUN_DIR,
    }
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"run-config file {path} not found")
        with path.open("rb") as fh:
            config.update(flatten_tables(tomllib.load(fh)))
    config.update(overrides)
    if config.get("task.name") != task_name:
        raise ConfigError(
            f"--task {task_name!r} but the run config says "
            f"task.name={config['task.name']!r}"
        )
    flags = {"num-server-rounds": rounds, "run-dir": out, "data-dir": data_dir}
    for key, value in flags.items():
        if value is None:
            continue
        if key in overrides and str(overrides[key]) != str(value):
            raise ConfigError(
                f"{FLAG_KEYS[key]} {value} and --set {key}={overrides[key]} "
                "disagree: give only one of them"
            )
        config[key] = value if isinstance(value, int) else str(value)
    config["resume"] = resume
    return config


def flatten_tables(table: Mapping, prefix: str = "") -> dict[str, Scalar]:
    """Nested TOML tables as Flower's flat dotted keys (``a.b = 1``)."""
    flat: dict[str, Scalar] = {}
    for key, value in table.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_tables(value, name))
        else:
            flat[name] = value
    return flat
