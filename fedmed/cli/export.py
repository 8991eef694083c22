"""``fedmed export``: a run checkpoint's adapters in the formats users load."""

from __future__ import annotations

from pathlib import Path

import typer

from fedmed.cli.options import console


def export(
    run: Path = typer.Argument(..., help="Run directory (holds config.json)."),
    round_: int | None = typer.Option(
        None, "--round", help="Checkpoint round (default: the last completed one)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Output folder (default: <run>/adapters[_round_K])."
    ),
) -> None:
    """Write the task's artefacts (e.g. SeLoRA's peft and diffusers adapters)."""
    from fedmed.export import export_run

    if not run.is_dir():
        raise typer.BadParameter(f"{run} is not a run directory", param_hint="RUN")
    written = export_run(run, round=round_, out=out)
    if not written:
        console.print("this task writes no artefacts; nothing exported")
    for path in written:
        console.print(f"wrote {path}")
