"""Progress of long local work, in a terminal or in a log file.

In a terminal a rich progress bar; elsewhere (CI, ``nohup``, a pipe) one
plain log line per step with the elapsed time, so a long job is never silent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

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
