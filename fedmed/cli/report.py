"""``fedmed report``: a run directory's tables and plots."""

from __future__ import annotations

from pathlib import Path

import typer

from fedmed.cli.options import console


def report(
    run: Path = typer.Argument(..., help="Run directory."),
    track: bool = typer.Option(
        False, "--track", help="Also log the run to MLflow (e.g. after flwr run)."
    ),
    tracking_uri: str = typer.Option(
        "", help="MLflow tracking URI (default: sqlite mlflow.db next to the run)."
    ),
) -> None:
    """Print a run's tables and (re)draw its plots; works on a partial run."""
    from fedmed.report import plot_run, print_report
    from fedmed.runs import RunDirectory

    if not run.is_dir():
        raise FileNotFoundError(f"run folder {run} does not exist")
    directory = RunDirectory(run)
    plots = plot_run(directory)
    print_report(directory, console)
    for plot in plots:
        console.print(f"plot: {plot}")
    if track:
        from fedmed.tracking import log_run

        run_id = log_run(directory, tracking_uri)
        console.print(f"logged to MLflow: run id {run_id}")
