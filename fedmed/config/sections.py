"""Run-config parsing: flat Flower run configs into frozen, validated dataclasses.

Flower run configs are flat mappings of dotted kebab-case keys to scalars
(``"classify.lora-rank" = 8``). Each scope of fedmed (the platform, each task)
owns one key prefix and one frozen dataclass; :func:`parse_section` turns the
keys under that prefix into the dataclass, converting kebab-case to snake_case,
coercing scalar types and refusing keys it does not know. Refusing unknown keys
is deliberate: a typo such as ``classify.lora-rnak`` must not silently fall
back to a default and train the wrong model.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

Scalar = bool | int | float | str
FlatConfig = Mapping[str, Scalar]

T = TypeVar("T")


class ConfigError(ValueError):
    """A run-config key is unknown, missing or has a value of the wrong kind."""


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def coerce_value(key: str, value: Scalar, annotation: Any) -> Any:
    """Convert a scalar from a run config into the field's declared type."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value == "" or value is None:
            return None
        annotation = options[0]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0"}:
            return value.lower() in {"true", "1"}
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected true/false, found {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, found {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, found {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{key}: expected an integer, found {value!r}")
        return int(as_float)
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, found {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, found {value!r}") from None
    if annotation is str:
        return str(value)
    if typing.get_origin(annotation) is typing.Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ConfigError(
                f"{key}: expected one of {', '.join(map(repr, allowed))}, "
                f"found {value!r}"
            )
        return value
    raise ConfigError(f"{key}: unsupported field type {annotation!r}")


def parse_section(cls: type[T], run_config: FlatConfig, prefix: str) -> T:
    """Build the frozen dataclass ``cls`` from the keys under ``prefix``.

    Keys under ``prefix.`` that ``cls`` has no field for raise
    :class:`ConfigError`, naming the accepted keys. Fields missing from the run
    config keep the dataclass default, which is how a task's paper defaults
    apply. ``__post_init__`` of ``cls`` does value checks (ranges, choices).
    """
    hints = typing.get_type_hints(cls)
    fields = {_kebab(f.name): f for f in dataclasses.fields(cls)}
    dot = f"{prefix}."
    values: dict[str, Any] = {}
    for key, value in run_config.items():
        if not key.startswith(dot):
            continue
        short = key[len(dot) :]
        if short not in fields:
            known = ", ".join(sorted(f"{dot}{k}" for k in fields))
            raise ConfigError(f"unknown run-config key {key!r}; known keys: {known}")
        field = fields[short]
        values[field.name] = coerce_value(key, value, hints[field.name])
    return cls(**values)


def csv_list(value: str) -> tuple[str, ...]:
    """Split a comma-separated run-config string (Flower configs hold scalars only)."""
    return tuple(part.strip() for part in value.split(",") if part.strip())
