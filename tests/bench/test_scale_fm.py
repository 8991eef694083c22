"""``fedmed bench scale-fm``: paper-size backbones before/after sharing."""

from __future__ import annotations

import pytest

from fedmed.bench.scale_fm import SITES, SUBJECTS, measure_worker, rows_for
from fedmed.bench.scale_fm_report import GPU_PENDING, plot_scale_fm, scale_fm_notes
from tests.bench.test_bench_cli import run_bench


def test_rows_derive_sites_from_the_measured_messages(tmp_path):
    # Prepare
    found = {
        "build_s_per_message": 0.5,
        "step_s": 10.0,
        "peak_rss_mb": 900.0,
        "site_state_mb": 2.0,
        "backbone_mb": 300.0,
    }
    # Execute
    rows = rows_for(SUBJECTS["samba"], "after", found, "cpu")
    notes = scale_fm_notes(
        rows + rows_for(SUBJECTS["samba"], "before", found, "cpu"), {}
    )
    png = plot_scale_fm(
        rows + rows_for(SUBJECTS["samba"], "before", found, "cpu"),
        {},
        tmp_path / "p.png",
    )
    # Assert
    assert [r["sites"] for r in rows] == list(SITES)
    assert [r["round_s"] for r in rows] == [s * (2 * 0.5 + 10.0) for s in SITES]
    assert rows[0]["fixed_cost_pct"] == 5.0
    assert GPU_PENDING in notes and "GPU figure pending" in notes
    assert png.stat().st_size > 10_000


def test_after_hands_out_models_faster_than_building_them():
    # Execute: tiny VFL-CLIP (its tokenizer alone is costly to rebuild)
    before = measure_worker("vfl-clip", "before", quick=True)
    after = measure_worker("vfl-clip", "after", quick=True)
    # Assert
    assert after["build_s_per_message"] < before["build_s_per_message"]
    assert after["step_s"] > 0 and after["site_state_mb"] > 0


@pytest.mark.slow
def test_scale_fm_quick_writes_before_and_after_rows(tmp_path):
    run, contract = run_bench("scale-fm", tmp_path)
    rows = contract["rows"]
    assert {(r["task"], r["mode"]) for r in rows} == {
        (t, m) for t in SUBJECTS for m in ("before", "after")
    }
    assert all(r["build_s_per_message"] > 0 and r["site_step_s"] > 0 for r in rows)
