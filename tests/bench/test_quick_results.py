"""``--quick`` writes to its own results folder and never touches full results."""

import json
from pathlib import Path

from typer.testing import CliRunner

from fedmed.bench import registry
from fedmed.bench.registry import Bench
from fedmed.cli.bench import bench_app


def _fake_plot(rows, detail, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"png")
    return path


def test_quick_leaves_full_results_unchanged(tmp_path, monkeypatch):
    # Prepare: a working directory holding full results; a bench measured instantly
    full = tmp_path / "benchmarks" / "results"
    full.mkdir(parents=True)
    (full / "dp_epsilon.json").write_text('{"bench": "dp_epsilon", "rows": [1]}')
    before = {p.name: p.read_bytes() for p in full.glob("*.json")}
    entry = registry.BENCHES["dp"]
    fake = Bench(
        contract=entry.contract,
        summary=entry.summary,
        measure=lambda quick, work: ([{"noise_multiplier": 1.0, "wall_s": 0.1}], {}),
        notes=lambda rows, detail: "quick",
        plot=_fake_plot,
    )
    monkeypatch.setitem(registry.BENCHES, "dp", fake)
    monkeypatch.chdir(tmp_path)
    # Execute
    result = CliRunner().invoke(bench_app, ["dp", "--quick", "--out", "work"])
    # Assert
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert {p.name: p.read_bytes() for p in full.glob("*.json")} == before
    quick = json.loads((full / "quick" / f"{entry.contract}.json").read_text())
    assert quick["command"] == "fedmed bench dp --quick"
    assert quick["rows"] == [{"noise_multiplier": 1.0, "wall_s": 0.1}]
