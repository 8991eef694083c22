"""The deployment benchmark's arithmetic, its payload app, and one real payload run."""

import json

import pytest

from fedmed.bench.deploy import (
    _round_walls,
    loopback_payloads,
    payload_row,
    write_payload_app,
)
from fedmed.bench.notes import deploy_notes
from fedmed.deploy.app_pin import build_fab, fab_files


def test_payload_row_separates_wire_time_from_the_rest():
    # Execute: 1M fp32 params down and up over 10 Mbit/s is 6.4 s of wire time
    row = payload_row("htb", 10, "lora", 1_000_000, [20.0, 9.0, 8.0])
    loop = payload_row("loopback", None, "lora", 1_000_000, [5.0])
    # Assert
    assert row["wire_s"] == 6.4 and row["round_s"] == 8.5
    assert row["fixed_cost_s_per_site"] == pytest.approx(2.1)
    assert row["first_round_s"] == 20.0 and row["payload_mb"] == 4.0
    assert loop["uplink_mbit"] == 0 and loop["fixed_cost_s_per_site"] == 5.0


def test_round_walls_add_train_and_evaluate_of_each_round(tmp_path):
    # Prepare
    rows = [
        {"round": 0, "phase": "heldout", "wall_s": 0.0},
        {"round": 1, "phase": "train", "wall_s": 10.0},
        {"round": 1, "phase": "evaluate", "wall_s": 4.0},
        {"round": 1, "phase": "heldout", "wall_s": 1.0},
        {"round": 2, "phase": "train", "wall_s": 7.0},
        {"round": 2, "phase": "evaluate", "wall_s": 3.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    # Execute / Assert
    assert _round_walls(tmp_path) == [14.0, 10.0]


def test_payload_app_is_a_flower_app_flower_builds(tmp_path):
    # Execute
    app = write_payload_app(tmp_path / "payload_app")
    names = fab_files(build_fab(app))
    # Assert
    assert {"payload_bench/server.py", "payload_bench/client.py"} <= set(names)


def test_notes_state_the_fixed_cost_honestly():
    # Prepare
    rows = [
        {
            "mode": "fedmed-classify-tiny",
            "round_s": 30.0,
            "simulated_round_s": 4.0,
            "sites": 2,
            "fixed_cost_s_per_site": 26.0,
        }
    ]
    # Execute
    text = deploy_notes(rows, {"payload_params": {"lora": 300295}, "links_skipped": ""})
    # Assert
    assert "26.0 s per round, above the 2 s target" in text
    assert "lora 300,295 params" in text


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_loopback_payload_rounds_are_measured(tmp_path):
    # Execute: a real deployment moving 1 MB each way, twice
    rows = loopback_payloads(tmp_path, {"lora": 250_000}, rounds=2)
    # Assert
    assert len(rows) == 1 and rows[0]["mode"] == "lora"
    assert rows[0]["round_s"] > 0 and rows[0]["payload_mb"] == 1.0


def test_fedmed_bench_deploy_is_a_command_with_its_figure(tmp_path):
    # Prepare
    from typer.testing import CliRunner

    from fedmed.bench.plots import plot_deploy
    from fedmed.bench.registry import BENCHES
    from fedmed.cli.bench import bench_app

    rows = [
        {
            "link": "loopback",
            "uplink_mbit": 0,
            "mode": "fedmed-classify-tiny",
            "round_s": 2.5,
            "fixed_cost_s_per_site": 1.2,
        },
        payload_row("htb", 10, "lora", 300_295, [9.0, 8.0]),
    ]
    # Execute
    result = CliRunner().invoke(bench_app, ["deploy", "--help"])
    png = plot_deploy(rows, {}, tmp_path / "deploy.png")
    # Assert
    assert result.exit_code == 0 and "fixed cost per site" in result.output
    assert BENCHES["deploy"].contract == "deploy"
    assert png.stat().st_size > 10_000
