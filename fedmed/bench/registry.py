"""Every ``fedmed bench`` benchmark, by name: what it measures and publishes.

An explicit table, not a lookup by naming convention: each entry names its
contract file (``benchmarks/results/<contract>.json``), its one-line summary,
the function that measures it (``(quick, work_dir) -> (rows, detail)``), the
prose under its BENCHMARKS.md table and its figure. The measuring and
plotting stacks (torch, matplotlib) load only when a bench runs, so
``fedmed --help`` stays fast. Standalone scripts under ``benchmarks/`` call
their ``fedmed.bench`` module directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmed.bench import notes

Rows = list[dict[str, Any]]
Detail = dict[str, Any]


@dataclass(frozen=True)
class Bench:
    """One benchmark of ``fedmed bench``."""

    contract: str
    summary: str
    measure: Callable[[bool, Path], tuple[Rows, Detail]]
    notes: Callable[[Rows, Detail], str]
    plot: Callable[[Rows, Detail, Path], Path]


def _measure_comm(quick: bool, work_dir: Path) -> tuple[Rows, Detail]:
    from fedmed.bench.comm import run_comm

    return run_comm(quick, work_dir)


def _measure_secagg(quick: bool, work_dir: Path) -> tuple[Rows, Detail]:
    from fedmed.bench.secagg import run_secagg

    return run_secagg(quick, work_dir)


def _measure_dp(quick: bool, work_dir: Path) -> tuple[Rows, Detail]:
    from fedmed.bench.dp import run_dp

    return run_dp(quick, work_dir)


def _measure_scale(quick: bool, work_dir: Path) -> tuple[Rows, Detail]:
    from fedmed.bench.scale import run_scale

    return run_scale(quick, work_dir)


def _measure_faults(quick: bool, work_dir: Path) -> tuple[Rows, Detail]:
    from fedmed.bench.faults import run_faults

    return run_faults(quick, work_dir)


def _measure_scale_fm(quick: bool, work_dir: Path) -> tuple[Rows, Detail]:
    from fedmed.bench.scale_fm import run_scale_fm

    return run_scale_fm(quick, work_dir)


def _notes_scale_fm(rows: Rows, detail: Detail) -> str:
    from fedmed.bench.scale_fm_report import scale_fm_notes

    return scale_fm_notes(rows, detail)


def _plot_scale_fm(rows: Rows, detail: Detail, path: Path) -> Path:
    from fedmed.bench.scale_fm_report import plot_scale_fm

    return plot_scale_fm(rows, detail, path)


def _measure_deploy(quick: bool, work_dir: Path) -> tuple[Rows, Detail]:
    from fedmed.bench.deploy import run_deploy

    return run_deploy(quick, work_dir)


def _plot_comm(rows: Rows, detail: Detail, path: Path) -> Path:
    from fedmed.bench.plots import plot_comm

    return plot_comm(rows, detail, path)


def _plot_secagg(rows: Rows, detail: Detail, path: Path) -> Path:
    from fedmed.bench.plots import plot_secagg

    return plot_secagg(rows, detail, path)


def _plot_dp(rows: Rows, detail: Detail, path: Path) -> Path:
    from fedmed.bench.plots import plot_dp

    return plot_dp(rows, detail, path)


def _plot_scale(rows: Rows, detail: Detail, path: Path) -> Path:
    from fedmed.bench.plots import plot_scale

    return plot_scale(rows, detail, path)


def _plot_faults(rows: Rows, detail: Detail, path: Path) -> Path:
    from fedmed.bench.plots import plot_faults

    return plot_faults(rows, detail, path)


def _plot_deploy(rows: Rows, detail: Detail, path: Path) -> Path:
    from fedmed.bench.plots import plot_deploy

    return plot_deploy(rows, detail, path)


#: ``comm`` and ``secagg`` write ``comm_tasks.json`` / ``secagg_scaling.json``
#: and leave the tables of ``benchmarks/comm.py`` (ViT-B/16 exchange modes,
#: ``comm.json``) and ``benchmarks/secagg.py`` (``secagg.json``) alone.
BENCHES: dict[str, Bench] = {
    "comm": Bench(
        "comm_tasks",
        "Bytes per round per site for every task, exchange mode and codec.",
        _measure_comm,
        notes.comm_notes,
        _plot_comm,
    ),
    "secagg": Bench(
        "secagg_scaling",
        "Secure vs plain aggregation over clients, vector size and dropouts.",
        _measure_secagg,
        notes.secagg_notes,
        _plot_secagg,
    ),
    "dp": Bench(
        "dp",
        "DP-FedAvg on adapter updates: epsilon (RDP accountant) and utility.",
        _measure_dp,
        notes.dp_notes,
        _plot_dp,
    ),
    "scale": Bench(
        "scale",
        "Simulation of 2 -> 50 sites: round wall, memory per site, overhead.",
        _measure_scale,
        notes.scale_notes,
        _plot_scale,
    ),
    "scale-fm": Bench(
        "scale_fm",
        "Paper-size backbones: per-message fixed cost and RSS, before/after sharing.",
        _measure_scale_fm,
        _notes_scale_fm,
        _plot_scale_fm,
    ),
    "faults": Bench(
        "faults",
        "Scripted faults and a killed server: the outcome of each, nothing lost.",
        _measure_faults,
        notes.faults_notes,
        _plot_faults,
    ),
    "deploy": Bench(
        "deploy",
        "Deployed round vs simulated: fixed cost per site, payloads over links.",
        _measure_deploy,
        notes.deploy_notes,
        _plot_deploy,
    ),
}
