"""Platform-level run-config keys, shared by every task.

Top-level keys (no dot, plus ``task.name``) belong to the platform; dotted
keys belong to the task named by their prefix (``classify.lr``). A key with
an unknown top-level name or an unknown prefix is an error, so a typo never
passes silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedmed.config import ConfigError, FlatConfig, coerce_value

Mode = Literal["federated", "local", "pooled"]
CommDtype = Literal["fp32", "fp16", "int8"]
Partitioner = Literal["iid", "dirichlet", "quantity"]


@dataclass(frozen=True)
class PlatformConfig:
    """What every run shares, whatever the task."""

    task_name: str = "classify"
    num_server_rounds: int = 3
    min_sites: int = 2
    fraction_train: float = 1.0
    comm_dtype: CommDtype = "fp32"
    data_dir: str = "data/dermamnist"
    run_dir: str = "runs/flwr-run"
    seed: int = 0
    mode: Mode = "federated"
    partition: Partitioner = "iid"
    partition_alpha: float = 0.5
    round_timeout_s: float = 3600.0
    secure_aggregation: bool = False
    resume: bool = False
    faults: str = ""
    fault_sleep_s: float = 5.0

    def __post_init__(self) -> None:
        if self.num_server_rounds < 1:
            raise ConfigError(
                f"num-server-rounds must be >= 1, found {self.num_server_rounds}"
            )
        if self.min_sites < 1:
            raise ConfigError(f"min-sites must be >= 1, found {self.min_sites}")
        if not 0.0 < self.fraction_train <= 1.0:
            raise ConfigError(
                f"fraction-train must be in (0, 1], found {self.fraction_train}"
            )
        if self.partition_alpha <= 0:
            raise ConfigError(
                f"partition-alpha must be > 0, found {self.partition_alpha}"
            )


_FIELDS = {f.replace("_", "-"): f for f in PlatformConfig.__dataclass_fields__}
_FIELDS["task.name"] = _FIELDS.pop("task-name")


def parse_platform(run_config: FlatConfig, task_names: list[str]) -> PlatformConfig:
    """Parse platform keys and check every other key has a known task prefix."""
    import typing

    hints = typing.get_type_hints(PlatformConfig)
    values = {}
    for key, value in run_config.items():
        if key in _FIELDS:
            values[_FIELDS[key]] = coerce_value(key, value, hints[_FIELDS[key]])
            continue
        prefix = key.split(".", 1)[0] if "." in key else None
        if prefix is None:
            known = ", ".join(sorted(_FIELDS))
            raise ConfigError(f"unknown run-config key {key!r}; platform keys: {known}")
        if prefix not in task_names:
            raise ConfigError(
                f"run-config key {key!r} has unknown prefix {prefix!r}; "
                f"task prefixes: {', '.join(sorted(task_names))}"
            )
    return PlatformConfig(**values)
