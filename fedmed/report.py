"""Summaries, plots and tables of a run directory.

Used by the ServerApp at the end of a run, by ``fedmed report`` and by the
benchmarks; reads only the run-directory contract (metrics.jsonl).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fedmed.run_plots import communication_figure, metrics_figure, rounds_trained
from fedmed.runs import RunDirectory

logger = logging.getLogger(__name__)


def _phase(records: list[dict], phase: str) -> list[dict]:
    return [r for r in records if r.get("phase") == phase]


FEDERATED_PHASES = ("train", "evaluate")


class RunFailed(RuntimeError):
    """A run that completed fewer rounds than asked or where every site failed."""


def run_shortfall(records: list[dict], rounds_asked: int) -> str | None:
    """Why a run did not do what it was asked, in one line; ``None`` if it did.

    A run falls short when fewer training rounds completed than asked, or when
    every site failed one of its federated phases (no site accepted, some
    rejected): metrics from such a run describe the untrained model.
    """
    done = len(
        {r["round"] for r in _phase(records, "train") if r.get("status", "ok") == "ok"}
    )
    wiped = [
        r
        for r in records
        if r.get("phase") in FEDERATED_PHASES
        and r.get("rejected")
        and not r.get("sites")
    ]
    if done >= rounds_asked and not wiped:
        return None
    line = f"{done} of {rounds_asked} rounds completed"
    if wiped:
        first = wiped[0]
        reason = first["rejected"][0].get("reason", "")
        line += (
            f"; every site failed the {first['phase']} phase of round "
            f"{first['round']} ({len(wiped)} phases in all), e.g. site "
            f"{first['rejected'][0].get('site')}: {reason}"
        )
    return line


def check_run_outcome(run: RunDirectory, rounds_asked: int) -> None:
    """Raise :class:`RunFailed` when the run fell short (see :func:`run_shortfall`)."""
    shortfall = run_shortfall(run.read_metrics(), rounds_asked)
    if shortfall is not None:
        raise RunFailed(f"run {run.path} failed: {shortfall}")


def summarize(
    run: RunDirectory,
    *,
    full_model_bytes: int,
    exchanged_bytes: int,
    extra: Mapping[str, Any] = (),
) -> dict[str, Any]:
    """Final metrics and communication totals from ``metrics.jsonl``."""
    records = run.read_metrics()
    train = [r for r in _phase(records, "train") if r.get("status") == "ok"]
    heldout = _phase(records, "heldout")
    evaluate = _phase(records, "evaluate")
    uploads = [r["bytes_up"] / r["accepted"] for r in train if r.get("accepted")]
    per_site = sum(uploads) / len(uploads) if uploads else 0.0
    summary: dict[str, Any] = {
        "rounds_completed": max((r["round"] for r in train), default=0),
        "final_heldout": heldout[-1]["aggregated"] if heldout else {},
        "initial_heldout": heldout[0]["aggregated"] if heldout else {},
        "final_site_evaluation": evaluate[-1]["aggregated"] if evaluate else {},
        "total_bytes_up": sum(r.get("bytes_up", 0) for r in records),
        "total_bytes_down": sum(r.get("bytes_down", 0) for r in records),
        "bytes_up_per_round_per_site": per_site,
        "exchanged_bytes": exchanged_bytes,
        "full_model_bytes": full_model_bytes,
        "exchanged_to_full_ratio": exchanged_bytes / full_model_bytes
        if full_model_bytes
        else None,
        "rejected_updates": sum(len(r.get("rejected", [])) for r in train),
        "wall_s": sum(r.get("wall_s", 0.0) for r in records),
    }
    summary["synthetic_data"] = run_is_synthetic(run)
    summary.update(dict(extra))
    return summary


def run_is_synthetic(run: RunDirectory) -> bool:
    """Whether the run trained on generated data (its ``synthetic-data`` key)."""
    config_file = run.path / "config.json"
    if not config_file.exists():
        return False
    value = json.loads(config_file.read_text()).get("synthetic-data", False)
    return value is True or str(value).lower() == "true"


def plot_run(run: RunDirectory, task_plots: bool = True) -> list[Path]:
    """Metric vs round, cumulative MB vs round and the task's own figures.

    The task's figures (``Task.write_plots``) come from the last checkpoint.
    They are secondary to the run, so a failure there is logged with its
    reason rather than raised: the metrics are already safe on disk.
    """
    records = run.read_metrics()
    run.plots.mkdir(parents=True, exist_ok=True)
    paths = [_plot_metrics(run, records), _plot_bytes(run, records)]
    if task_plots:
        paths.extend(_plot_task(run))
    return [p for p in paths if p is not None]


def _plot_task(run: RunDirectory) -> list[Path]:
    config_file = run.path / "config.json"
    checkpoint = run.latest_checkpoint()
    if checkpoint is None or not config_file.exists():
        return []
    from fedmed.tasks import get_task

    try:
        task = get_task(json.loads(config_file.read_text()))
        model = task.build_model()
        task.load_exchanged(model, checkpoint[1])
        return task.write_plots(model, run.plots)
    except Exception:  # noqa: BLE001 - reported, never hides the run's results
        logger.exception("task plots for %s could not be drawn", run.path)
        return []


def _save(fig, path: Path) -> Path | None:
    if fig is None:
        return None
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _plot_metrics(run: RunDirectory, records: list[dict]) -> Path | None:
    figure = metrics_figure(records, synthetic=run_is_synthetic(run))
    return _save(figure, run.plots / "metrics.png")


def _plot_bytes(run: RunDirectory, records: list[dict]) -> Path | None:
    return _save(communication_figure(records), run.plots / "communication.png")


def print_report(run: RunDirectory, console: Console | None = None) -> None:
    """Rich tables: per-round metrics, per-site metrics, summary and comparison.

    Works on a partial run (killed or failed): what ``metrics.jsonl`` holds is
    shown, and the missing summary is said, not raised.
    """
    console = console or Console()
    records = run.read_metrics()
    if run_is_synthetic(run):
        console.print(
            "[bold yellow]SYNTHETIC DATA:[/] this run trained and was scored on "
            "generated data; its metrics say nothing about real patients"
        )
    console.print(_rounds_table(run, records))
    if (sites := _sites_table(records)) is not None:
        console.print(sites)
    if rounds_trained(records) == 0:
        console.print("[bold red]no training round completed[/]")
    summary_file = run.path / "summary.json"
    if not summary_file.exists():
        console.print(
            f"[bold red]{summary_file} missing:[/] the run did not finish; "
            "the tables above hold what it recorded"
        )
        return
    summary = run.read_summary()
    if comparison := summary.get("comparison", {}):
        console.print(_comparison_table(comparison))
    console.print(
        "bytes up per round per site: "
        f"{summary.get('bytes_up_per_round_per_site', 0):,.0f}  "
        f"exchanged/full model: {summary.get('exchanged_to_full_ratio') or 0:.4f}"
    )
    if (privacy := privacy_line(summary)) is not None:
        console.print(privacy)


def _rounds_table(run: RunDirectory, records: list[dict]) -> Table:
    table = Table(title=f"run {run.path}")
    for col in ("round", "phase", "metrics", "MB up", "MB down", "wall s"):
        table.add_column(col)
    for r in records:
        shown = {
            k: v
            for k, v in r.get("aggregated", {}).items()
            if isinstance(v, float | int)
        }
        text = ", ".join(f"{k}={v:.4g}" for k, v in sorted(shown.items()))
        if r.get("rejected"):
            text += f" [red](rejected: {len(r['rejected'])})[/]"
        table.add_row(
            str(r["round"]),
            r["phase"],
            text,
            f"{r.get('bytes_up', 0) / 1e6:.3f}",
            f"{r.get('bytes_down', 0) / 1e6:.3f}",
            f"{r.get('wall_s', 0):.1f}",
        )
    return table


def _sites_table(records: list[dict]) -> Table | None:
    """The last site evaluation, one column per site, metrics as rows."""
    evaluate = [r for r in _phase(records, "evaluate") if r.get("sites")]
    if not evaluate:
        return None
    last = evaluate[-1]
    sites = sorted(last["sites"], key=lambda s: (len(s), s))
    table = Table(title=f"per-site evaluation, round {last['round']}")
    table.add_column("metric")
    for site in sites:
        table.add_column(f"site {site}", justify="right")
    names = sorted({k for s in sites for k in last["sites"][s]} - {"site-id"})
    for name in names:
        table.add_row(name, *[_fmt(last["sites"][s].get(name)) for s in sites])
    return table


def _comparison_table(comparison: Mapping[str, Mapping[str, Any]]) -> Table:
    """Settings as columns, metrics as rows (headers never cut)."""
    table = Table(title="federated vs local vs pooled (global held-out test)")
    table.add_column("metric")
    for setting in comparison:
        table.add_column(setting, justify="right")
    names = sorted({k for values in comparison.values() for k in values})
    for name in names:
        table.add_row(name, *[_fmt(v.get(name)) for v in comparison.values()])
    return table


def privacy_line(summary: dict[str, Any]) -> str | None:
    """What the server could learn, in one line (None for a plain run)."""
    if "dp_clip_norm" in summary:
        epsilon = summary.get("dp_epsilon")
        guarantee = (
            f"({epsilon:.3g}, {summary['dp_delta']:g})-DP at site level"
            if epsilon is not None
            else "no noise: clipping only, no DP guarantee"
        )
        return (
            f"differential privacy: {guarantee} after "
            f"{summary.get('rounds_completed', 0)} rounds "
            f"(noise multiplier {summary['dp_noise_multiplier']:g}, "
            f"clip norm {summary['dp_clip_norm']:g})"
        )
    if summary.get("secure_aggregation"):
        return "secure aggregation: the server learned only sums over sites"
    return None


def _fmt(value: Any) -> str:
    return (
        f"{value:.4f}"
        if isinstance(value, float)
        else str(value if value is not None else "")
    )
