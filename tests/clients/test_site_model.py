"""One process serving several sites: shared backbone, nothing else shared.

A Ray actor (or a warm site worker) answers messages for many sites with the
same frozen backbone. Each site's reply and optimizer state must be exactly
what a fresh process running only that site produces, whatever the process
served before; and the backbone is built once, not once per message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

import clients.site
from fedmed.tasks import get_task, task_class
from fedmed.tasks.backbones import BackboneCache
from tests.clients.site_round import initial_arrays, site_round

REPO = Path(__file__).resolve().parents[2]
NUM_SITES = 2
#: Task -> run-config overrides keeping one local round short.
TASKS = {
    "classify": {"classify.max-steps-per-round": 3},
    "samba": {},
    "selora": {},
    "fpt": {},
}


def tiny_config(name: str, data: Path, **extra) -> dict:
    config = tomllib.loads((REPO / "configs" / f"{name}_tiny.toml").read_text())
    config.update({"data-dir": str(data), "num-server-rounds": 1, **extra})
    return config


def fresh_process_round(run_config: dict, site: int, arrays: Path, out: Path) -> dict:
    """The reference: ``site``'s round in a process that served nothing else."""
    args = out.with_suffix(".json")
    args.write_text(
        json.dumps(
            {
                "run_config": run_config,
                "site": site,
                "num_sites": NUM_SITES,
                "arrays": str(arrays),
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "tests.clients.site_round", str(args), str(out)],
        cwd=REPO,
        env=env,
        check=True,
        timeout=600,
    )
    return torch.load(out, weights_only=True)


def assert_same(found: dict, expected: dict, what: str) -> None:
    assert found.keys() == expected.keys(), what
    for key in expected:
        assert torch.equal(found[key], expected[key]), f"{what}: {key} differs"


@pytest.fixture
def cache(monkeypatch) -> BackboneCache:
    fresh = BackboneCache()
    monkeypatch.setattr(clients.site, "BACKBONES", fresh)
    return fresh


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[] if n == "classify" else pytest.mark.slow) for n in TASKS],
)
def test_sites_served_alternately_match_fresh_processes(name, tmp_path, cache):
    # Prepare
    data = tmp_path / "data"
    task = get_task(tiny_config(name, data))
    task.synthesize_data(data, NUM_SITES, seed=0)
    config = tiny_config(name, data, **TASKS[name])
    arrays = initial_arrays(config)
    torch.save(arrays, tmp_path / "arrays.pt")
    references = [
        fresh_process_round(config, s, tmp_path / "arrays.pt", tmp_path / f"s{s}.pt")
        for s in range(NUM_SITES)
    ]
    # Execute: sites 0, 1, 0, 1 in this one process
    served = [site_round(config, s % NUM_SITES, NUM_SITES, arrays) for s in range(4)]
    # Assert
    for k, result in enumerate(served):
        expected = references[k % NUM_SITES]
        assert_same(result["trained"], expected["trained"], f"reply of message {k}")
        assert_same(result["optimizer"], expected["optimizer"], f"optimizer {k}")
    assert cache.builds == 1
    assert any(
        not torch.equal(served[0]["trained"][k], served[1]["trained"][k])
        for k in arrays
    ), "the two sites must train differently for the test to mean anything"


def test_backbone_built_once_across_rounds_and_sites(tmp_path, cache, monkeypatch):
    # Prepare: count every construction of the classify model
    data = tmp_path / "data"
    config = tiny_config("classify", data, **TASKS["classify"])
    get_task(config).synthesize_data(data, NUM_SITES, seed=0)
    arrays = initial_arrays(config)
    cls = task_class("classify")
    built = []
    original = cls.build_model
    monkeypatch.setattr(
        cls, "build_model", lambda self: built.append(1) or original(self)
    )
    # Execute: 3 rounds x 2 sites, each round starting from the last reply
    for _ in range(3):
        replies = [site_round(config, s, NUM_SITES, arrays) for s in range(NUM_SITES)]
        arrays = replies[-1]["trained"]
    # Assert
    assert len(built) == 1
    assert cache.builds == 1
