"""`fedmed simulate --set differential-privacy=true`: Flower's DP wrapper in a real run.

Two classify sites (configs/classify_tiny.toml), two rounds through Flower's
simulation runtime with server-side fixed clipping. The round-1 site updates
are recomputed in this process (the same deterministic task calls the
ClientApp makes), clipped to ``dp-clip-norm`` and averaged; what the server
saved minus that clipped mean is the noise it added, whose standard
deviation must be ``sigma * clip / m``. The summary must report the
accountant's epsilon after two releases.
"""

import json
import tomllib

import pytest
import torch
from safetensors.torch import load_file

from fedmed.privacy.accountant import epsilon_after
from fedmed.privacy.dp import clip_update
from fedmed.tasks import get_task
from tests.contracts import check_contract
from tests.e2e.test_secure_aggregation_simulation import TINY, simulate

pytestmark = pytest.mark.e2e
SIGMA, CLIP, DELTA = 0.5, 0.05, 1e-4
DP = [
    "differential-privacy=true",
    f"dp-noise-multiplier={SIGMA}",
    f"dp-clip-norm={CLIP}",
    f"dp-delta={DELTA}",
]


def clipped_round_one_mean(data, sites: int) -> tuple[dict, dict]:
    """Initial state and the uniform mean of the sites' clipped round-1 updates."""
    task = get_task({**tomllib.loads(TINY.read_text()), "data-dir": str(data)})
    initial = task.exchanged(task.build_model())
    clipped = []
    for site in range(sites):
        model = task.build_model()
        task.load_exchanged(model, initial)
        node = {"partition-id": site, "num-partitions": sites}
        task.fit(model, task.site_data(node), {"server-round": 1})
        clipped.append(clip_update(task.exchanged(model), initial, CLIP))
    mean = {k: sum(c[k].double() for c in clipped) / sites for k in initial}
    return initial, mean


def test_dp_run_adds_calibrated_noise_and_reports_epsilon(tmp_path):
    # Prepare
    data, run = tmp_path / "data", tmp_path / "dp"
    # Execute
    done = simulate(run, data, 2, DP)
    # Assert: a complete run directory
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    check_contract("run", run)
    # Round 1: saved aggregate = clipped mean + N(0, (sigma * clip / m)^2)
    initial, mean = clipped_round_one_mean(data, 2)
    saved = load_file(str(run / "checkpoints" / "round_1.safetensors"))
    noise = torch.cat(
        [(saved[k].double() - mean[k]).flatten() for k in sorted(initial)]
    )
    assert noise.numel() > 2000
    assert noise.mean().abs() < 4 * SIGMA * CLIP / 2 / noise.numel() ** 0.5
    assert noise.std().item() == pytest.approx(SIGMA * CLIP / 2, rel=0.1)
    # Epsilon of two releases, in the summary and the round-2 state file
    summary = json.loads((run / "summary.json").read_text())
    expected = epsilon_after(SIGMA, 2, DELTA)
    assert summary["dp_epsilon"] == pytest.approx(expected, rel=1e-9)
    assert (summary["dp_delta"], summary["dp_clip_norm"]) == (DELTA, CLIP)
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["last_round"] == 2
    assert state["dp_epsilon"] == pytest.approx(expected, rel=1e-9)
    train = [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if '"train"' in line
    ]
    assert [r["accepted"] for r in train] == [2, 2]
    assert [r["aggregated"]["dp-epsilon"] for r in train] == pytest.approx(
        [epsilon_after(SIGMA, 1, DELTA), expected], rel=1e-9
    )


def test_dp_with_secure_aggregation_is_refused_before_anything_runs(tmp_path):
    # Execute
    done = simulate(
        tmp_path / "run", tmp_path / "data", 2, [*DP, "secure-aggregation=true"]
    )
    # Assert
    assert done.returncode != 0
    assert "cannot be combined" in done.stdout + done.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
