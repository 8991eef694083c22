"""Write benchmark results and regenerate BENCHMARKS.md from them.

Contract (DESIGN.md): ``benchmarks/results/<bench>.json`` holds
``{"bench", "device", "created", "command", "rows"}`` with flat, snake_case
rows whose field names carry their unit. Optional top-level ``notes`` (prose
shown under the table) and ``plots`` (PNG paths relative to the repository).
BENCHMARKS.md is never edited by hand: :func:`update_benchmarks_md` rebuilds it
from every results file, so a figure cannot drift from its measurement.
"""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
BENCHMARKS_MD = REPO_ROOT / "BENCHMARKS.md"
_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


def device_name() -> str:
    """The GPU name when CUDA is in use, else the CPU model and core count."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{cpu} ({os.cpu_count()} cores, CPU only)"


def write_result(
    bench: str,
    rows: Sequence[dict[str, Any]],
    command: str,
    *,
    notes: str = "",
    plots: Sequence[str] = (),
    results_dir: Path = RESULTS_DIR,
    device: str | None = None,
) -> Path:
    """Validate ``rows`` against the contract and write ``<bench>.json``."""
    if not rows:
        raise ValueError(f"benchmark {bench!r} produced no rows")
    for i, row in enumerate(rows):
        for key, value in row.items():
            if not _SNAKE.match(key):
                raise ValueError(f"{bench} row {i}: field {key!r} is not snake_case")
            if isinstance(value, dict | list | tuple):
                raise ValueError(f"{bench} row {i}: field {key!r} is nested")
    payload = {
        "bench": bench,
        "device": device or device_name(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "rows": list(rows),
    }
    if notes:
        payload["notes"] = notes
    if plots:
        payload["plots"] = list(plots)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{bench}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def _format(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def render_section(payload: dict[str, Any]) -> str:
    """One markdown section: heading, device, rerun command, table, notes, plots."""
    rows = payload["rows"]
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    lines = [
        f"## {payload['bench']}",
        "",
        f"Device: {payload['device']} · measured {payload['created']}",
        "",
        f"Rerun: `{payload['command']}`",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        lines.append("| " + " | ".join(_format(row.get(c, "")) for c in columns) + " |")
    if payload.get("notes"):
        lines += ["", payload["notes"]]
    for plot in payload.get("plots", []):
        lines += ["", f"![{payload['bench']}]({plot})"]
    return "\n".join(lines) + "\n"


def update_benchmarks_md(
    results_dir: Path = RESULTS_DIR, md_path: Path = BENCHMARKS_MD
) -> Path:
    """Regenerate BENCHMARKS.md from every ``*.json`` in ``results_dir``."""
    sections = [
        render_section(json.loads(p.read_text()))
        for p in sorted(Path(results_dir).glob("*.json"))
    ]
    header = (
        "# fedmed benchmarks\n\n"
        "Generated from `benchmarks/results/*.json` by the benchmark scripts "
        "(`fedmed.bench.results.update_benchmarks_md`); do not edit by hand. "
        "Ratios are measured in one run on one machine; absolute figures name "
        "their device.\n\n"
    )
    md_path.write_text(header + "\n".join(sections))
    return md_path
