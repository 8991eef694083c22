"""Experiment tracking: a run directory logged to MLflow.

Every ``fedmed simulate`` / ``demo`` run is logged once it ends (finished or
failed): its run config as parameters, every ``metrics.jsonl`` row as
metrics at ``step = round`` (``<phase>/<metric>`` aggregated,
``<phase>/site_<k>/<metric>`` per site, ``<phase>/bytes_up`` and
``bytes_down``), the summary's numbers, and the plots, summary, config,
metrics file and last checkpoint as artifacts. The store is embedded by
default (``mlflow.db``, SQLite, next to the run folder, with artifacts in
``mlartifacts/``): ``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``
shows the runs. ``tracking-uri`` (run config, or ``--tracking-uri``) names a
team server instead; ``off`` turns tracking off. mlflow is imported only
here, when a run is logged, so nothing else pays for it.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fedmed.runs import RunDirectory

log = logging.getLogger(__name__)

STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
OFF = "off"
BATCH = 900  # below MLflow's 1000 metrics per log_batch call
PARAM_BATCH = 90  # below its 100 parameters per call
PARAM_CHARS = 6000


def store_uri(run_path: Path, configured: str = "") -> str | None:
    """The MLflow tracking URI for a run; ``None`` when tracking is off."""
    if configured.strip().lower() == OFF:
        return None
    if configured:
        return configured
    return f"sqlite:///{(run_path.resolve().parent / STORE_FILE)}"


def metric_points(records: Sequence[dict]) -> Iterator[tuple[str, float, int]]:
    """``(key, value, step)`` for every finite number in ``metrics.jsonl`` rows."""
    for r in records:
        phase, step = r.get("phase", "unknown"), int(r.get("round", 0))
        for key, value in r.get("aggregated", {}).items():
            if (number := _finite(value)) is not None:
                yield f"{phase}/{key}", number, step
        for site, metrics in r.get("sites", {}).items():
            for key, value in metrics.items():
                if (number := _finite(value)) is not None:
                    yield f"{phase}/site_{site}/{key}", number, step
        for key in ("bytes_up", "bytes_down", "wall_s"):
            if (number := _finite(r.get(key))) is not None:
                yield f"{phase}/{key}", number, step


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def log_run(run: RunDirectory, configured_uri: str = "", *, failed: bool = False):
    """Log ``run`` to MLflow as one MLflow run; its id (``None`` when off)."""
    uri = store_uri(run.path, configured_uri)
    if uri is None:
        return None
    with warnings.catch_warnings():  # SQLAlchemy deprecations inside mlflow's store
        warnings.simplefilter("ignore", DeprecationWarning)
        return _log_run(run, uri, failed)


def _log_run(run: RunDirectory, uri: str, failed: bool) -> str:
    from mlflow.entities import Metric, Param, RunStatus
    from mlflow.tracking import MlflowClient

    config = _read_json(run.path / "config.json")
    summary = _read_json(run.path / "summary.json")
    client = MlflowClient(tracking_uri=uri)
    experiment = _experiment(client, f"fedmed-{config.get('task.name', 'run')}", uri)
    tags = {"fedmed.run_dir": str(run.path.resolve())}
    tags["fedmed.synthetic_data"] = str(config.get("synthetic-data", False)).lower()
    mlflow_run = client.create_run(experiment, run_name=run.path.name, tags=tags)
    run_id = mlflow_run.info.run_id
    params = [Param(k, str(v)[:PARAM_CHARS]) for k, v in sorted(config.items())]
    for start in range(0, len(params), PARAM_BATCH):
        client.log_batch(run_id, params=params[start : start + PARAM_BATCH])
    points = [
        Metric(key, value, 0, step)
        for key, value, step in metric_points(run.read_metrics())
    ]
    points += [
        Metric(f"summary/{k}", v, 0, 0)
        for k, value in summary.items()
        if (v := _finite(value)) is not None
    ]
    for start in range(0, len(points), BATCH):
        client.log_batch(run_id, metrics=points[start : start + BATCH])
    _log_artifacts(client, run_id, run)
    status = RunStatus.FAILED if failed else RunStatus.FINISHED
    client.set_terminated(run_id, RunStatus.to_string(status))
    log.info("run logged to MLflow %s (run id %s)", uri, run_id)
    return run_id


def _experiment(client, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        store = Path(uri.removeprefix("sqlite:///"))
        location = (store.parent / ARTIFACTS_DIR).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def _log_artifacts(client, run_id: str, run: RunDirectory) -> None:
    for name in ("config.json", "summary.json", "metrics.jsonl"):
        if (run.path / name).is_file():
            client.log_artifact(run_id, str(run.path / name))
    if run.plots.is_dir() and any(run.plots.iterdir()):
        client.log_artifacts(run_id, str(run.plots), artifact_path="plots")
    adapters = run.path / "adapters"
    if adapters.is_dir():
        client.log_artifacts(run_id, str(adapters), artifact_path="adapters")
    elif (latest := _latest_checkpoint(run)) is not None:
        client.log_artifact(run_id, str(latest), artifact_path="checkpoints")


def _latest_checkpoint(run: RunDirectory) -> Path | None:
    marker = run.checkpoints / "state.json"
    if not marker.is_file():
        return None
    path = run.checkpoints / json.loads(marker.read_text())["checkpoint"]
    return path if path.is_file() else None


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}
