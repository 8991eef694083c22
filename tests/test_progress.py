"""Progress lines for rounds and local work, also outside a terminal."""

import json
import logging

from fedmed.progress import RoundWatcher, progress_steps


def test_each_new_metrics_row_becomes_one_progress_line(tmp_path, caplog):
    # Prepare: a resumed run already holds round 1
    metrics = tmp_path / "metrics.jsonl"
    old = {"round": 1, "phase": "train", "sites": {"0": {}}, "aggregated": {}}
    metrics.write_text(json.dumps(old) + "\n")
    caplog.set_level(logging.INFO, logger="fedmed.progress")
    # Execute
    with RoundWatcher(metrics, rounds=2, every_s=0.05), metrics.open("a") as fh:
        row = {
            "round": 2,
            "phase": "train",
            "sites": {"0": {}, "1": {}},
            "rejected": [{"site": "2", "reason": "NaN"}],
            "aggregated": {"train_loss": 0.5},
        }
        fh.write(json.dumps(row) + "\n")
    # Assert
    lines = [r.getMessage() for r in caplog.records if r.name == "fedmed.progress"]
    assert lines == ["round 2/2 train: 2 sites, 1 rejected train_loss=0.5"]


def test_local_work_logs_plain_lines_outside_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="fedmed.progress")
    with progress_steps() as steps:  # pytest's stderr is not a terminal
        job = steps.add("pooled", 2)
        steps.advance(job, 1)
        steps.advance(job, 2)
    lines = [r.getMessage() for r in caplog.records if r.name == "fedmed.progress"]
    assert [line.split(" (")[0] for line in lines] == [
        "pooled: 1/2 done",
        "pooled: 2/2 done",
    ]
