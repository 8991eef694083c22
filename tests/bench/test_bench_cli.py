"""``fedmed bench`` subcommands in quick mode write their JSON with sane values."""

import json
import math
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedmed.bench.comm import tiny_config
from fedmed.bench.faults import RESUMED, SCENARIOS, run_faulty, scenario_row
from fedmed.bench.loop import federated_loop
from fedmed.bench.scale import measure_simulation, scale_row
from fedmed.cli.bench import bench_app
from fedmed.data.synth_dermamnist import synthesize
from tests.contracts import check_contract

REPO = Path(__file__).resolve().parents[2]


def run_bench(name: str, tmp_path: Path) -> tuple[dict, dict]:
    """``fedmed bench <name> --quick`` into tmp folders: (run JSON, contract JSON)."""
    out, results = tmp_path / "bench", tmp_path / "results"
    result = CliRunner().invoke(
        bench_app, [name, "--quick", "--out", str(out), "--results-dir", str(results)]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    run = json.loads((out / f"{name}.json").read_text())
    contract_file = results / (Path(run["contract"]).name)
    assert (results / Path(run["plot"]).name).stat().st_size > 10_000
    check_contract("results", results)
    return run, json.loads(contract_file.read_text())


def test_secagg_quick_measures_every_dropout_and_costs_bytes(tmp_path):
    # Execute
    run, contract = run_bench("secagg", tmp_path)
    # Assert
    rows = contract["rows"]
    assert contract["bench"] == "secagg_scaling"
    assert {r["dropout_fraction"] for r in rows} == {0.0, 0.2}
    assert {10, 50, 100} <= {r["clients"] for r in rows}
    assert all(r["secure_bytes"] >= r["plain_bytes"] > 0 for r in rows)
    assert all(r["setup_bytes"] > 0 for r in rows)
    assert sum("round_time_ratio" in r for r in rows) == 1  # the VFL round, 10 sites
    assert all(r["max_abs_error"] < 1e-3 for r in rows)
    assert run["rows"] == rows


def test_dp_quick_reports_finite_epsilon_decreasing_in_noise(tmp_path):
    # Execute
    _, contract = run_bench("dp", tmp_path)
    # Assert
    rows = contract["rows"]
    utility = [r for r in rows if r["kind"] == "utility"]
    private = sorted(
        (r for r in utility if r["noise_multiplier"] > 0),
        key=lambda r: r["noise_multiplier"],
    )
    assert len(private) >= 3 and any(r["noise_multiplier"] == 0 for r in utility)
    eps = [r["epsilon"] for r in private]
    assert all(math.isfinite(e) and e > 0 for e in eps)
    assert all(a > b for a, b in zip(eps, eps[1:], strict=False))
    assert all(0.0 <= r["heldout_auc"] <= 1.0 for r in utility)
    assert all(0.0 <= r["clipped_fraction"] <= 1.0 for r in private)
    for rate in {r["sampling_rate"] for r in rows if r["kind"] == "accountant"}:
        curve = [
            r["epsilon"]
            for r in rows
            if r["kind"] == "accountant" and r["sampling_rate"] == rate
        ]
        assert all(a > b for a, b in zip(curve, curve[1:], strict=False))


@pytest.mark.slow
def test_comm_quick_covers_every_task_and_codec(tmp_path):
    # Execute
    _, contract = run_bench("comm", tmp_path)
    # Assert
    rows = contract["rows"]
    from fedmed.tasks import list_tasks

    assert {r["task"] for r in rows} == set(list_tasks())
    costs = [r for r in rows if "heldout_auc" in r]
    assert {r["codec"] for r in costs} == {"fp32", "fp16", "int8"}
    assert all(0.0 <= r["heldout_auc"] <= 1.0 for r in costs)


@pytest.mark.slow
def test_scale_quick_measures_time_and_memory_per_site_count(tmp_path):
    # Execute
    _, contract = run_bench("scale", tmp_path)
    # Assert
    rows = contract["rows"]
    assert [r["sites"] for r in rows] == [2, 4, 8]
    for r in rows:
        assert 0 < r["sim_round_s"] <= r["sim_first_round_s"]
        assert r["loop_round_s"] > 0
        assert r["overhead_ratio"] == pytest.approx(
            r["sim_round_s"] / r["loop_round_s"]
        )
        assert 50 < r["peak_site_rss_mb"] < r["peak_total_rss_mb"]
        assert 1 <= r["actors"] <= os.cpu_count()


def test_two_site_simulation_is_timed_and_sampled_against_the_loop(tmp_path):
    # Prepare
    data = tmp_path / "data"
    synthesize(data, 2, samples_per_site=40, seed=3, heldout_samples=40)
    config = {**tiny_config("classify"), "data-dir": str(data)}
    # Execute
    sim = measure_simulation(2, 2, data, tmp_path / "run")
    loop = federated_loop(config, 2, 2, evaluate_sites=True).round_walls_s
    row = scale_row(2, 2, sim, loop, loop_peak=1.0)
    # Assert
    assert len(sim["round_walls"]) == 2 and len(sim["round_actor_mb"]) == 2
    assert row["sim_total_s"] > row["sim_first_round_s"] + row["sim_round_s"]
    assert row["sim_first_round_s"] > row["sim_round_s"]  # actors start in round 1
    assert row["overhead_ratio"] == pytest.approx(sum(sim["round_walls"][1:]) / loop[1])
    assert 50 < row["peak_site_rss_mb"] < row["peak_total_rss_mb"]
    assert 1 <= row["actors"] <= os.cpu_count()


@pytest.mark.slow
def test_faults_quick_every_scenario_survives_with_nothing_lost(tmp_path):
    # Execute
    _, contract = run_bench("faults", tmp_path)
    # Assert
    rows = {r["scenario"]: r for r in contract["rows"]}
    assert set(rows) == {
        "nan_update",
        "wrong_shape_update",
        "client_raises",
        "client_times_out",
        "corrupt_data_file",
        "server_killed_and_resumed",
    }
    for name, row in rows.items():
        assert row["survived"], (name, row)
        assert row["checkpoints_lost"] == 0 and row["replies_accounted"], (name, row)
    assert rows["client_times_out"]["outcome"] == "timed_out"
    assert rows["server_killed_and_resumed"]["outcome"].startswith("resumed at round")


def test_client_faults_are_rejected_and_the_rounds_still_complete(tmp_path):
    # Prepare: every scenario except the timeout (a round-timeout wait) and the
    # kill/resume (two more simulations); both run in the slow test above
    quick = [s for s in SCENARIOS if s.name not in ("client_times_out", RESUMED)]
    # Execute
    run = run_faulty(tmp_path, quick, timeout_s=300.0)
    rows = {s.name: scenario_row(s, run) for s in quick}
    # Assert
    assert run.rounds == 2 and run.exit_code == 0
    for name, row in rows.items():
        assert row["outcome"] == "rejected", (name, row)
        assert row["survived"] and row["checkpoints_lost"] == 0, (name, row)
    assert rows["client_raises"]["accepted_updates"] == 1  # site 1 only
    assert "truncated or corrupt" in rows["corrupt_data_file"]["reason"]
