"""Re-export what a user takes away from a run, from any of its checkpoints.

A finished run already holds its final adapters under ``runs/<name>/adapters/``
(written through :meth:`fedmed.tasks.Task.write_artifacts`); this rebuilds them
from the run directory alone: the run's ``config.json`` rebuilds the task and
its model, a checkpoint's aggregate is loaded, and the task writes its
artefacts. It backs ``fedmed export RUN [--round K] [--out DIR]``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from safetensors.torch import load_file

from fedmed.runs import STATE_FILE, RunDirectory
from fedmed.tasks import get_task

logger = logging.getLogger(__name__)

ARTIFACTS_DIR = "adapters"
_CHECKPOINT = re.compile(r"^round_(\d+)\.safetensors$")


def checkpoint_rounds(run: RunDirectory) -> list[int]:
    """Rounds that have a checkpoint in ``run``, ascending."""
    if not run.checkpoints.is_dir():
        return []
    found = (_CHECKPOINT.match(p.name) for p in run.checkpoints.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def _last_round(run: RunDirectory) -> int | None:
    marker = run.checkpoints / STATE_FILE
    return (
        int(json.loads(marker.read_text())["last_round"]) if marker.is_file() else None
    )


def _checkpoint(run: RunDirectory, server_round: int | None):
    """(round, state) of the requested checkpoint, or of the last completed round."""
    if server_round is None:
        latest = run.latest_checkpoint()
        if latest is None:
            raise FileNotFoundError(
                f"run {run.path} has no checkpoint yet ({run.checkpoints}/state.json "
                "is missing): export needs at least one completed round"
            )
        return latest[0], latest[1]
    path = run.checkpoints / f"round_{server_round}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"run {run.path} has no checkpoint of round {server_round}; rounds with "
            f"a checkpoint: {checkpoint_rounds(run) or 'none'}"
        )
    return server_round, load_file(str(path))


def export_run(
    run_dir: str | Path, round: int | None = None, out: str | Path | None = None
) -> list[Path]:
    """Write the task's artefacts of one checkpoint of ``run_dir``; returns the paths.

    ``round`` picks the checkpoint (default: the last completed round);
    ``out`` defaults to ``<run>/adapters`` for the last round and
    ``<run>/adapters_round_<k>`` for an earlier one. A task without
    artefacts writes nothing and an empty list comes back.
    """
    run = RunDirectory(run_dir)
    config_file = run.path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{config_file} not found: pass a run directory written by "
            "`fedmed simulate --out` or the ServerApp (it holds config.json)"
        )
    server_round, state = _checkpoint(run, round)
    task = get_task(json.loads(config_file.read_text()))
    if not task.writes_artifacts:
        logger.warning("task %r writes no artefacts; nothing exported", task.name)
        return []
    model = task.build_model()
    task.load_exchanged(model, state)
    if out is None:
        is_last = round is None or server_round == _last_round(run)
        name = ARTIFACTS_DIR if is_last else f"{ARTIFACTS_DIR}_round_{server_round}"
        out = run.path / name
    written = task.write_artifacts(model, Path(out))
    if written:
        logger.info(
            "exported round %d of %s to %s (%d paths)",
            server_round,
            run.path,
            out,
            len(written),
        )
    return written
