"""The run directory: the contract between server, CLI, report and benchmarks.

Layout (DESIGN.md)::

    runs/<name>/config.json        the full run config
    runs/<name>/metrics.jsonl      one object per round and phase
    runs/<name>/summary.json       final metrics and communication totals
    runs/<name>/checkpoints/round_<k>.safetensors  (+ state.json: last round)
    runs/<name>/plots/*.png

Each ``metrics.jsonl`` line has ``round``, ``phase`` (``train``,
``evaluate``, ``heldout``, ``setup``, or a baseline name), ``sites``
(per-site metrics and bytes), ``aggregated``, ``bytes_up``, ``bytes_down``,
``wall_s``; rows of federated phases add ``rejected`` (site and reason) and
whatever the phase reports (``status``, ``accepted``, ``dropped``...).
:meth:`RunDirectory.record_round` builds every row, from a
:class:`RoundTally` the strategy filled while the round's messages came and
went, and adds what crossed the network to the run's
:class:`NetworkLedger`, which ``summary.json`` states under ``network``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

STATE_FILE = "state.json"
DIRECTIONS = ("down", "up")  # server -> sites, sites -> server

#: What one message carries: ``{record: {entry: bytes}}`` (``fedmed.wire``).
PayloadShape = Mapping[str, Mapping[str, int]]


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


#: The reason recorded for a site that was asked and never answered in time.
NO_REPLY = "no reply (timeout)"


@dataclass
class RoundTally:
    """Bytes per site, accepted sites' metrics and rejections of one round phase.

    ``list_every_site``: the row lists every site that exchanged bytes (secure
    aggregation, where the server holds no per-site metrics); otherwise it
    lists the sites whose reply was accepted, with their metrics.
    """

    list_every_site: bool = False
    up: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    down: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejected: list[dict[str, str]] = field(default_factory=list)
    #: Sites whose reply failed (error reply, no reply) rather than was refused.
    failed: list[str] = field(default_factory=list)
    #: Per direction, what the messages carried (largest size per entry).
    shapes: dict[str, dict[str, dict[str, int]]] = field(
        default_factory=lambda: {d: {} for d in DIRECTIONS}
    )
    messages: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(DIRECTIONS, 0)
    )

    def sent(
        self, site: str, num_bytes: int, shape: PayloadShape | None = None
    ) -> None:
        """Count a message's payload to ``site`` (and what it carried)."""
        self.down[site] += num_bytes
        self._carried("down", shape)

    def received(
        self, site: str, num_bytes: int, shape: PayloadShape | None = None
    ) -> None:
        """Count a reply's payload from ``site`` (and what it carried)."""
        self.up[site] += num_bytes
        self._carried("up", shape)

    def _carried(self, direction: str, shape: PayloadShape | None) -> None:
        self.messages[direction] += 1
        for record, entries in (shape or {}).items():
            known = self.shapes[direction].setdefault(record, {})
            for name, size in entries.items():
                known[name] = max(known.get(name, 0), int(size))

    def accept(self, site: str, metrics: Mapping[str, Any]) -> None:
        """List ``site`` in the row with the metrics it reported."""
        self.metrics[site] = dict(metrics)

    def reject(self, site: str, reason: str, *, failed: bool = False) -> None:
        """List ``site`` among the rejected replies, with why; ``failed``: the
        reply was an error or never came (else its content was refused)."""
        self.rejected.append({"site": site, "reason": reason})
        if failed:
            self.failed.append(site)

    def relabel(self, labels: Mapping[str, str]) -> None:
        """Rename sites counted before their names were known (node ids)."""
        for counts in (self.up, self.down):
            for old, new in labels.items():
                if old in counts and old != new:
                    counts[new] += counts.pop(old)

    def take(self) -> dict[str, Any]:
        """The row's ``sites``, ``rejected`` and byte totals; start afresh."""
        if self.list_every_site:
            listed = sorted(set(self.up) | set(self.down))
        else:
            listed = list(self.metrics)
        sites = {
            s: {
                **self.metrics.get(s, {}),
                "bytes_up": self.up[s],
                "bytes_down": self.down[s],
            }
            for s in listed
        }
        row = {
            "sites": sites,
            "rejected": self.rejected,
            "bytes_up": sum(self.up.values()),
            "bytes_down": sum(self.down.values()),
            "failed": len(self.failed),
            "shapes": self.shapes,
            "messages": self.messages,
        }
        self.up, self.down = defaultdict(int), defaultdict(int)
        self.metrics, self.rejected, self.failed = {}, [], []
        self.shapes = {d: {} for d in DIRECTIONS}
        self.messages = dict.fromkeys(DIRECTIONS, 0)
        return row


@dataclass
class NetworkLedger:
    """What crossed the network in each phase of this run, for ``summary.json``.

    Per phase and direction: the messages and bytes, and every record entry
    carried with its largest size in one message (tensor names and bytes,
    metric names, statistic sizes). Per phase: replies refused for their
    content and replies that failed (an error, or none). Covers the rounds
    this process ran (``rows``): a resumed run states its resumed part.
    """

    phases: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, phase: str, taken: Mapping[str, Any]) -> None:
        """Fold one row's tally (:meth:`RoundTally.take`) into the phase."""
        entry = self.phases.setdefault(
            phase,
            {
                "rows": 0,
                "rejected": 0,
                "failed": 0,
                **{d: {"messages": 0, "bytes": 0, "carried": {}} for d in DIRECTIONS},
            },
        )
        entry["rows"] += 1
        entry["failed"] += taken["failed"]
        entry["rejected"] += len(taken["rejected"]) - taken["failed"]
        for direction in DIRECTIONS:
            side = entry[direction]
            side["messages"] += taken["messages"][direction]
            side["bytes"] += taken[f"bytes_{direction}"]
            for record, entries in taken["shapes"][direction].items():
                known = side["carried"].setdefault(record, {})
                for name, size in entries.items():
                    known[name] = max(known.get(name, 0), size)

    def summary(self) -> dict[str, Any]:
        """``{phase: {rows, rejected, failed, down: {...}, up: {...}}}``, sorted."""
        out: dict[str, Any] = {}
        for phase, entry in sorted(self.phases.items()):
            out[phase] = {k: v for k, v in entry.items() if k not in DIRECTIONS}
            for direction in DIRECTIONS:
                side = entry[direction]
                carried = {
                    record: dict(sorted(entries.items()))
                    for record, entries in sorted(side["carried"].items())
                }
                out[phase][direction] = {**side, "carried": carried}
        return out


class RunDirectory:
    """Reads and writes one run's folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.plots = self.path / "plots"
        #: What crossed the network in the rows this process recorded.
        self.network = NetworkLedger()

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

    def record_round(
        self,
        server_round: int,
        phase: str,
        aggregated: Mapping[str, Any],
        tally: RoundTally | None = None,
        *,
        wall_s: float = 0.0,
        **extra: Any,
    ) -> dict[str, Any]:
        """Build and append one ``metrics.jsonl`` row; the row as written.

        Without a ``tally`` (held-out scoring, baselines) nothing travelled:
        no sites, no bytes. ``extra`` adds the phase's own fields (``status``,
        ``accepted``, ``dropped``, ``parties``...).
        """
        row: dict[str, Any] = {"round": server_round, "phase": phase}
        if tally is None:
            row.update(sites={}, aggregated=dict(aggregated), bytes_up=0, bytes_down=0)
        else:
            taken = tally.take()
            self.network.add(phase, taken)
            row.update(sites=taken["sites"], rejected=taken["rejected"])
            row.update(aggregated=dict(aggregated), bytes_up=taken["bytes_up"])
            row.update(bytes_down=taken["bytes_down"])
        row.update(extra)
        row["wall_s"] = wall_s
        self.append_metrics(row)
        return row

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
