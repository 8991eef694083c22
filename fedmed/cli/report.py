"""``fedmed report``: a run directory's tables and plots."""

from __future__ import annotations

from pathlib import Path

import typer

from fedmed.cli.options import console


def report(run: Path = typer.Argument(..., help="Run directory.")) -> None:
    """Print a run's tables and (re)draw its plots."""
    from fedmed.report import plot_run, print_report
    from fedmed.runs import RunDirectory

    if not run.is_dir():
        raise FileNotFoundError(f"run folder {run} does not exist")
    directory = RunDirectory(run)
    plots = plot_run(directory)
    print_report(directory, console)
    for plot in plots:
        console.print(f"plot: {plot}")
