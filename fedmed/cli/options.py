"""Options every run command shares (``simulate``, ``demo``, ``deploy local``)."""

from __future__ import annotations

import typer

from fedmed.config import Scalar


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
