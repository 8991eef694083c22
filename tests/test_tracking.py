"""A run directory logged to MLflow reads back equal to its metrics.jsonl."""

import json

import pytest

from fedmed.runs import RunDirectory
from fedmed.tracking import log_run, metric_points, store_uri

mlflow = pytest.importorskip("mlflow")


def _run(tmp_path) -> RunDirectory:
    run = RunDirectory(tmp_path / "runs" / "r1")
    config = {"task.name": "classify", "num-server-rounds": 2, "synthetic-data": True}
    run.create(config)
    for k in (1, 2):
        run.append_metrics(
            {
                "round": k,
                "phase": "evaluate",
                "sites": {"0": {"auc": 0.5 + k / 10}, "1": {"auc": 0.6 + k / 10}},
                "aggregated": {"auc": 0.55 + k / 10, "loss": None},
                "bytes_up": 100 * k,
                "bytes_down": 200 * k,
                "wall_s": 1.5,
            }
        )
        run.append_metrics(
            {"round": k, "phase": "pooled", "aggregated": {"auc": 0.9}, "wall_s": 0}
        )
    run.write_summary({"rounds_completed": 2, "task": "classify"})
    (run.plots / "metrics.png").write_bytes(b"png")
    return run


def test_the_mlflow_store_reads_back_what_metrics_jsonl_holds(tmp_path):
    # Prepare
    run = _run(tmp_path)
    # Execute: the default store is SQLite next to the run folder
    run_id = log_run(run)
    # Assert
    client = mlflow.tracking.MlflowClient(store_uri(run.path))
    assert (tmp_path / "runs" / "mlflow.db").is_file()
    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params["num-server-rounds"] == "2"
    assert logged.data.tags["fedmed.synthetic_data"] == "true"
    expected: dict[str, list[tuple[int, float]]] = {}
    for key, value, step in metric_points(run.read_metrics()):
        expected.setdefault(key, []).append((step, value))
    assert "evaluate/site_1/auc" in expected and "evaluate/loss" not in expected
    for key, points in expected.items():
        history = client.get_metric_history(run_id, key)
        assert sorted((m.step, m.value) for m in history) == sorted(points), key
    assert logged.data.metrics["summary/rounds_completed"] == 2
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.json", "summary.json", "metrics.jsonl", "plots"} <= artifacts
    rows = [json.loads(x) for x in run.metrics_file.read_text().splitlines()]
    assert [m.value for m in client.get_metric_history(run_id, "evaluate/auc")] == [
        r["aggregated"]["auc"] for r in rows if r["phase"] == "evaluate"
    ]


def test_tracking_off_writes_no_store(tmp_path):
    run = _run(tmp_path)
    assert log_run(run, "off") is None
    assert not (tmp_path / "runs" / "mlflow.db").exists()
