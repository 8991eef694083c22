"""Each method task runs through `fedmed simulate`, exactly as a user starts it.

Tiny random-initialised configs on synthetic data in the real formats; the
assertions are on the run directory a user gets: rounds completed, finite
held-out metrics, adapter-only traffic, the task's own figures, and (where a
round is long enough to learn) that the held-out metric improved.
"""

import json
import math
import subprocess
from pathlib import Path

import pytest

from fedmed.commands import simulate_command
from tests.contracts import check_contract

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def simulate(task: str, out: Path, data: Path, sites: int, rounds: int) -> dict:
    config = REPO / "configs" / f"{task}_tiny.toml"
    cmd = simulate_command(task, out, data, sites, rounds, run_config=config)
    subprocess.run(cmd, check=True, cwd=REPO, timeout=900)
    check_contract("run", out)
    return json.loads((out / "summary.json").read_text())


def finite_metrics(metrics: dict) -> dict:
    numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    assert numbers and all(math.isfinite(v) for v in numbers.values()), metrics
    return numbers


def test_fpt_federation_learns_and_sends_only_side_network_and_prompts(tmp_path):
    summary = simulate("fpt", tmp_path / "run", tmp_path / "data", sites=3, rounds=2)
    assert summary["rounds_completed"] == 2
    before = finite_metrics(summary["initial_heldout"])["auc"]
    after = finite_metrics(summary["final_heldout"])["auc"]
    assert after > max(before, 0.7)
    assert summary["bytes_up_per_round_per_site"] < summary["full_model_bytes"]


def test_samba_federation_fine_tunes_the_decoder_and_draws_overlays(tmp_path):
    run = tmp_path / "run"
    summary = simulate("samba", run, tmp_path / "data", sites=2, rounds=1)
    assert summary["rounds_completed"] == 1
    before = finite_metrics(summary["initial_heldout"])
    final = finite_metrics(summary["final_heldout"])
    dice = {k: v for k, v in final.items() if k.endswith("_dice")}
    assert {"finetuned_wt_dice", "finetuned_sam_dice"} <= set(dice), final
    assert all(0.0 <= v <= 1.0 for v in dice.values())
    assert final["finetuned_sam_dice"] > before["finetuned_sam_dice"] + 0.1
    # Only the mask decoder (+ voting net) travels; the tiny SAM's encoder stays.
    assert summary["bytes_up_per_round_per_site"] < summary["full_model_bytes"]
    overlays = [p for p in (run / "plots").glob("*.png") if "overlay" in p.name]
    assert overlays and all(p.stat().st_size > 1000 for p in overlays)


def test_selora_federation_grows_ranks_and_draws_the_rank_heatmap(tmp_path):
    run = tmp_path / "run"
    summary = simulate("selora", run, tmp_path / "data", sites=2, rounds=1)
    assert summary["rounds_completed"] == 1
    finite_metrics(summary["final_heldout"])
    train = [
        json.loads(x)
        for x in (run / "metrics.jsonl").read_text().splitlines()
        if x and json.loads(x)["phase"] == "train"
    ]
    assert train and train[0]["bytes_up"] > 0
    heatmaps = [p for p in (run / "plots").glob("*.png") if "rank" in p.name]
    assert heatmaps and heatmaps[0].stat().st_size > 1000
