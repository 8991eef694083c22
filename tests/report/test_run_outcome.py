"""A run's outcome: short runs and wiped phases fail; synthetic runs say so."""

import json

import pytest

from fedmed.report import RunFailed, check_run_outcome, run_shortfall, summarize
from fedmed.runs import RunDirectory


def _train(k: int, status: str = "ok", sites=None, rejected=()):
    return {
        "round": k,
        "phase": "train",
        "status": status,
        "sites": sites if sites is not None else {"0": {}},
        "rejected": list(rejected),
    }


def test_a_run_that_did_what_it_was_asked_has_no_shortfall():
    assert run_shortfall([_train(1), _train(2)], 2) is None


def test_fewer_rounds_than_asked_is_a_shortfall():
    line = run_shortfall([_train(1), _train(2, status="skipped", sites={})], 2)
    assert line == "1 of 2 rounds completed"


def test_a_phase_every_site_failed_is_named_with_a_reason():
    wiped = {
        "round": 1,
        "phase": "evaluate",
        "sites": {},
        "rejected": [{"site": "3", "reason": "ValueError: bad.npz is corrupt"}],
    }
    line = run_shortfall([_train(1), wiped], 1)
    assert "every site failed the evaluate phase of round 1" in line
    assert "site 3: ValueError: bad.npz is corrupt" in line


def test_check_run_outcome_raises_for_a_run_with_no_round(tmp_path):
    run = RunDirectory(tmp_path)
    run.append_metrics(_train(1, status="skipped", sites={}, rejected=[]))
    with pytest.raises(RunFailed, match="0 of 3 rounds completed"):
        check_run_outcome(run, 3)


def test_the_summary_of_a_synthetic_run_says_so(tmp_path):
    run = RunDirectory(tmp_path)
    run.create({"task.name": "classify", "synthetic-data": True})
    run.append_metrics(_train(1))
    summary = summarize(run, full_model_bytes=10, exchanged_bytes=1)
    assert summary["synthetic_data"] is True
    assert json.loads((tmp_path / "config.json").read_text())["synthetic-data"]
