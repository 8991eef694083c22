"""Options every run command shares (``simulate``, ``demo``, ``deploy local``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from fedmed.config import Scalar

console = Console()

TASK: str = typer.Option("classify", help="Registered task name.")
SET: list[str] = typer.Option([], "--set", help="Run-config override key=value.")
RUN_CONFIG: list[Path] = typer.Option([], "--run-config", help="Override TOML file(s).")


def parse_set(items: list[str]) -> dict[str, Scalar]:
    """``key=value`` pairs with scalar types inferred (true/false, int, float, str)."""
    out: dict[str, Scalar] = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"--set expects key=value, found {item!r}")
        key, raw = item.split("=", 1)
        value: Scalar = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for kind in (int, float):
                try:
                    value = kind(raw)
                    break
                except ValueError:
                    continue
        out[key.strip()] = value
    return out
