"""The run directory: the contract between server, CLI, report and benchmarks.

Layout (DESIGN.md)::

    runs/<name>/config.json        the full run config
    runs/<name>/metrics.jsonl      one object per round and phase
    runs/<name>/summary.json       final metrics and communication totals
    runs/<name>/checkpoints/round_<k>.safetensors  (+ state.json: last round)
    runs/<name>/plots/*.png

Each ``metrics.jsonl`` line has ``round``, ``phase`` (``train``,
``evaluate``, ``heldout``, or a baseline name), ``sites`` (per-site
metrics and bytes), ``aggregated``, ``bytes_up``, ``bytes_down``, ``wall_s``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

STATE_FILE = "state.json"


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/Inf become None, tuples lists, numpy scalars floats."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunDirectory:
    """Reads and writes one run's folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.plots = self.path / "plots"

    def create(self, run_config: Mapping[str, Any], resume: bool = False) -> None:
        """Make the folders; a fresh run refuses to overwrite an existing one."""
        if self.metrics_file.exists() and not resume:
            raise FileExistsError(
                f"run directory {self.path} already holds a run: pass --resume to "
                "continue it or choose another --out"
            )
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.plots.mkdir(parents=True, exist_ok=True)
        (self.path / "config.json").write_text(
            json.dumps(_clean(dict(run_config)), indent=2)
        )

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """Append one round/phase record (flushed at once, so a kill loses nothing)."""
        with self.metrics_file.open("a") as fh:
            fh.write(json.dumps(_clean(dict(record))) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.exists():
            return []
        lines = self.metrics_file.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def save_checkpoint(
        self, server_round: int, state: Mapping[str, Tensor], extra: Mapping[str, Any]
    ) -> Path:
        """Write the aggregate of ``server_round``, then the round counter (atomic)."""
        path = self.checkpoints / f"round_{server_round}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        tmp.replace(path)
        marker = self.checkpoints / STATE_FILE
        payload = {"last_round": server_round, "checkpoint": path.name, **dict(extra)}
        marker.with_suffix(".tmp").write_text(json.dumps(_clean(payload)))
        marker.with_suffix(".tmp").replace(marker)
        return path

    def latest_checkpoint(self) -> tuple[int, dict[str, Tensor], dict[str, Any]] | None:
        """``(round, state, strategy state)`` of the last completed round, if any."""
        marker = self.checkpoints / STATE_FILE
        if not marker.exists():
            return None
        info = json.loads(marker.read_text())
        state = load_file(str(self.checkpoints / info["checkpoint"]))
        return int(info["last_round"]), state, info

    def truncate_metrics_after(self, server_round: int) -> None:
        """Drop records of rounds after the last checkpoint (a run killed mid-round)."""
        kept = [
            r for r in self.read_metrics() if int(r.get("round", 0)) <= server_round
        ]
        self.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        (self.path / "summary.json").write_text(
            json.dumps(_clean(dict(summary)), indent=2)
        )

    def read_summary(self) -> dict[str, Any]:
        path = self.path / "summary.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: the run has not finished")
        return json.loads(path.read_text())
