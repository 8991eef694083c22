"""Drive one federated run on a deployment to its configured number of rounds.

Flower marks a run ``finished:failed`` when its SuperLink restarts mid-run (the
ServerApp process goes with it). The run directory still holds every finished
round's checkpoint, so the run is resubmitted with ``resume=true`` and the
ServerApp continues after the last checkpoint: no round is lost or repeated.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fedmed.config import Scalar, parse_platform
from fedmed.deploy.local import DeploymentError, LocalDeployment, write_run_config

log = logging.getLogger(__name__)

FINISHED = "finished"
COMPLETED = "finished:completed"
ProgressFn = Callable[[dict], None]


@dataclass(frozen=True)
class RunOutcome:
    """How a deployed run ended: Flower run ids used, rounds in the run directory."""

    run_ids: tuple[int, ...]
    rounds_completed: int
    run_dir: Path


def rounds_completed(run_dir: Path) -> int:
    """Rounds whose checkpoint exists: the run's durable progress."""
    found = (Path(run_dir) / "checkpoints").glob("round_*.safetensors")
    return max((int(p.stem.removeprefix("round_")) for p in found), default=0)


def summary_rounds(run_dir: Path) -> int:
    """``rounds_completed`` of summary.json, 0 when the run has not finished."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return 0
    return int(json.loads(path.read_text()).get("rounds_completed", 0))


class MetricsFollower:
    """Hands each new metrics.jsonl row to a callback (progress for the user)."""

    def __init__(self, run_dir: Path, on_row: ProgressFn | None) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.on_row = on_row
        self.seen = 0

    def poll(self) -> None:
        if self.on_row is None or not self.path.is_file():
            return
        lines = [x for x in self.path.read_text().splitlines() if x.strip()]
        if len(lines) < self.seen:  # truncated by a resume
            self.seen = len(lines)
        for line in lines[self.seen :]:
            self.on_row(json.loads(line))
        self.seen = len(lines)


def drive_run(
    deployment: LocalDeployment,
    app_dir: Path,
    run_config: Mapping[str, Scalar],
    *,
    timeout_s: float = 3600.0,
    max_resubmits: int = 2,
    poll_s: float = 5.0,
    on_row: ProgressFn | None = None,
) -> RunOutcome:
    """Submit the run, follow it, resubmit with resume after a failure."""
    platform = parse_platform(run_config)
    run_dir, rounds = Path(platform.run_dir), platform.num_server_rounds
    config = dict(run_config)
    follower = MetricsFollower(run_dir, on_row)
    deadline = time.monotonic() + timeout_s
    run_ids: list[int] = []
    while True:
        path = write_run_config(config, deployment.workdir / f"run-{len(run_ids)}.toml")
        run_ids.append(deployment.submit(app_dir, path))
        log.info("submitted run %d (resume=%s)", run_ids[-1], config.get("resume"))
        status = _wait_finished(deployment, run_ids[-1], follower, deadline, poll_s)
        follower.poll()
        done = summary_rounds(run_dir) >= rounds and status == COMPLETED
        if done:
            return RunOutcome(tuple(run_ids), rounds_completed(run_dir), run_dir)
        if len(run_ids) > max_resubmits:
            raise DeploymentError(
                f"run {run_ids[-1]} ended {status} after "
                f"{rounds_completed(run_dir)} of "
                f"{rounds} rounds and {max_resubmits} resubmissions; see "
                f"{deployment.workdir / 'logs'}"
            )
        log.warning(
            "run %d ended %s at round %d of %d: resuming",
            run_ids[-1],
            status,
            rounds_completed(run_dir),
            rounds,
        )
        config["resume"] = True


def _wait_finished(
    deployment: LocalDeployment,
    run_id: int,
    follower: MetricsFollower,
    deadline: float,
    poll_s: float,
) -> str:
    """Poll Flower's run status until it is finished (or the deadline passes)."""
    next_status = 0.0
    while time.monotonic() < deadline:
        follower.poll()
        if time.monotonic() >= next_status:  # each status query starts a flwr CLI
            status = deployment.run_status(run_id)
            if status.startswith(FINISHED):
                return status
            next_status = time.monotonic() + poll_s
        time.sleep(0.5)
    raise DeploymentError(f"run {run_id} did not finish before the timeout")
