"""Local-only and pooled (centralised) baselines with the federated compute budget.

Medical FL papers report a federated model next to each site training alone
and next to a model trained on the pooled data. Both baselines here run the
same ``fit`` the sites run, for the same number of rounds: a local model sees
only its site's data, the pooled model sees every site's data each round (the
same samples the federation processes). Both are scored on the global
held-out set (or the pooled site test sets when there is none).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from fedmed.progress import Steps, progress_steps
from fedmed.runs import RunDirectory
from fedmed.tasks.base import SiteData, Task


def _scorer(
    task: Task, sites: list[SiteData]
) -> Callable[[nn.Module], dict[str, float]]:
    heldout = task.heldout_data()
    if heldout is not None:
        return lambda model: task.evaluate_heldout(model, heldout)
    pooled = task.pool(sites)
    return lambda model: task.evaluate(model, pooled).metrics


def _train_rounds(
    task: Task, data: SiteData, rounds: int, score, steps: Steps, label: str
) -> list[dict[str, float]]:
    model = task.build_model()
    history = []
    job = steps.add(label, rounds)
    for server_round in range(1, rounds + 1):
        task.fit(model, data, {"server-round": server_round})
        history.append(score(model))
        steps.advance(job, server_round)
    return history


@contextmanager
def thread_budget(threads: int) -> Iterator[None]:
    """Run torch with ``threads`` intra-op threads, then restore the count.

    A simulated site (a Ray actor) gets its CPU share as its thread count;
    a baseline trained with torch's default (every core) competes with
    itself on a loaded machine and is not the same compute budget.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_baselines(
    task: Task, num_sites: int, rounds: int, run: RunDirectory, *, threads: int = 1
) -> dict[str, dict]:
    """Train local-only and pooled models; log per-round records; return finals.

    ``threads`` is one site's CPU share (``--cpus-per-site``), the budget
    every baseline model trains with.
    """
    sites = task.baseline_sites(num_sites)
    score = _scorer(task, sites)
    with thread_budget(threads), progress_steps() as progress:
        started = time.perf_counter()
        local = [
            _train_rounds(
                task, site, rounds, score, progress, f"local site {site.site_id}"
            )
            for site in sites
        ]
        local_wall = time.perf_counter() - started
        started = time.perf_counter()
        pooled = _train_rounds(
            task, task.pool(sites), rounds, score, progress, "pooled"
        )
        pooled_wall = time.perf_counter() - started
    for k in range(rounds):
        names = local[0][k].keys()
        mean = {n: float(np.mean([site[k][n] for site in local])) for n in names}
        for phase, metrics, wall in (
            ("local", mean, local_wall),
            ("pooled", pooled[k], pooled_wall),
        ):
            run.record_round(k + 1, phase, metrics, wall_s=wall / rounds)
    final_local = {
        n: float(np.mean([site[-1][n] for site in local])) for n in local[0][-1]
    }
    return {"local (mean of sites)": final_local, "pooled": pooled[-1]}
