"""Progress of long work, in a terminal or in a log file.

Local work (baselines): a rich progress bar in a terminal; elsewhere (CI,
``nohup``, a pipe) one plain log line per step with the elapsed time, so a
long job is never silent. Federated rounds: one line per row the run writes
to ``metrics.jsonl`` (round k of N, sites accepted and rejected, the key
metrics), read while Flower runs, so the same lines appear everywhere.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

log = logging.getLogger(__name__)


class Steps:
    """Advance a named job one step at a time."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._jobs: dict[str, tuple[int | None, int, float]] = {}

    def add(self, label: str, total: int) -> str:
        job = self._progress.add_task(label, total=total) if self._progress else None
        self._jobs[label] = (job, total, time.perf_counter())
        return label

    def advance(self, label: str, done: int) -> None:
        job, total, started = self._jobs[label]
        if self._progress is not None and job is not None:
            self._progress.advance(job)
            return
        elapsed = time.perf_counter() - started
        log.info("%s: %d/%d done (%.0f s)", label, done, total, elapsed)


@contextmanager
def progress_steps(console: Console | None = None) -> Iterator[Steps]:
    """A rich bar when writing to a terminal, plain log lines otherwise."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield Steps(None)
        return
    with Progress(console=console, transient=True) as progress:
        yield Steps(progress)


class RoundWatcher:
    """Log a line per ``metrics.jsonl`` row while a run writes them."""

    def __init__(self, metrics_file: Path, rounds: int, every_s: float = 2.0):
        self.metrics_file, self.rounds, self.every_s = metrics_file, rounds, every_s
        self._seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> RoundWatcher:
        self._seen = len(self._lines())  # a resumed run's rows are not news
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()

    def _lines(self) -> list[str]:
        if not self.metrics_file.exists():
            return []
        return [x for x in self.metrics_file.read_text().splitlines() if x.strip()]

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            self.poll()

    def poll(self) -> None:
        """Log the rows written since the last poll."""
        lines = self._lines()
        for line in lines[self._seen :]:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a row being written: read it next time
                break
            log.info("%s", round_line(row, self.rounds))
            self._seen += 1


def round_line(row: dict, rounds: int) -> str:
    """One row of ``metrics.jsonl`` as a progress line."""
    metrics = ", ".join(
        f"{k}={v:.4g}"
        for k, v in sorted(row.get("aggregated", {}).items())
        if isinstance(v, int | float) and not isinstance(v, bool)
    )
    text = f"round {row.get('round')}/{rounds} {row.get('phase')}"
    if "sites" in row and row.get("phase") in ("train", "evaluate"):
        text += f": {len(row['sites'])} sites, {len(row.get('rejected', []))} rejected"
    return f"{text} {metrics}".rstrip()
