"""``fedmed simulate`` and ``fedmed demo``: federated runs on this machine."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import typer

from fedmed.cli.options import RUN_CONFIG, SET, TASK, console, parse_set
from fedmed.commands import apply_hermetic_env

log = logging.getLogger(__name__)


def simulate(
    task: str = TASK,
    sites: int = typer.Option(3, min=1),
    rounds: int | None = typer.Option(
        None, min=1, help="Server rounds (default: the run config's, else 3)."
    ),
    out: Path | None = typer.Option(
        None, help="Run directory (default: the run config's run-dir, else runs/sim)."
    ),
    set_: list[str] = SET,
    run_config: list[Path] = RUN_CONFIG,
    data_dir: Path | None = typer.Option(
        None, help="Site data folder (default data/<task>); must exist."
    ),
    resume: bool = typer.Option(
        False, help="Continue a killed run from its checkpoint."
    ),
    compare: bool = typer.Option(
        True, help="Also train local-only and pooled baselines."
    ),
    synth: bool = typer.Option(
        False,
        "--synth",
        help="Write SYNTHETIC data into the data folder when it is missing "
        "(the run is marked synthetic).",
    ),
    cpus_per_site: float = typer.Option(1.0),
    gpus_per_site: float = typer.Option(
        0.0, help="Fractional: 0.25 = 4 sites per GPU."
    ),
    ray_address: str | None = typer.Option(
        None,
        help="HOST:PORT of a running Ray cluster's head: sites are spread over "
        "its nodes (each node needs fedmed and the data-dir path).",
    ),
    tracking_uri: str | None = typer.Option(
        None,
        help="MLflow tracking URI (default: sqlite mlflow.db next to the run "
        "folder; 'off' to skip).",
    ),
) -> None:
    """Simulate N hospitals on this machine (Flower simulation runtime, Ray)."""
    apply_hermetic_env()
    from fedmed.cli.preflight import preflight
    from fedmed.config.run_config import resolve_run_config

    config = resolve_run_config(
        task,
        rounds=rounds,
        out=out,
        data_dir=data_dir,
        files=run_config,
        overrides=parse_set(set_),
        resume=resume,
    )
    if tracking_uri is not None:
        config["tracking-uri"] = tracking_uri
    config, write_synth = preflight(config, synth=synth, gpus_per_site=gpus_per_site)
    from fedmed.report import RunFailed, print_report
    from fedmed.runs import RunDirectory
    from server.simulation import run_experiment

    started = time.perf_counter()
    run = RunDirectory(str(config["run-dir"]))
    uri = str(config.get("tracking-uri", ""))
    try:
        path = run_experiment(
            config,
            sites,
            compare=compare and not resume,
            synth=write_synth,
            cpus_per_site=cpus_per_site,
            gpus_per_site=gpus_per_site,
            ray_address=ray_address,
        )
    except RunFailed:
        track(run, uri, failed=True)
        raise
    track(run, uri, failed=False)
    print_report(RunDirectory(path), console)
    console.print(f"run directory: {path}  ({time.perf_counter() - started:.0f} s)")


def track(run, uri: str, *, failed: bool) -> None:
    """Log the run to MLflow; a tracking failure is reported, never the run's."""
    from fedmed.tracking import log_run

    if not run.metrics_file.exists():
        return
    try:
        log_run(run, uri, failed=failed)
    except Exception as err:  # noqa: BLE001 - the run's results are safe on disk
        log.warning("the run was not logged to MLflow (%s): %s", uri or "default", err)


def demo(
    out: Path = typer.Option(Path("runs/demo")),
    data_dir: Path = typer.Option(Path("data/demo-dermamnist")),
    sites: int = typer.Option(3, min=2),
    rounds: int = typer.Option(3, min=1),
) -> None:
    """Synthetic DermaMNIST, a 3-hospital LoRA simulation and its report."""
    import shutil

    config_file = Path(__file__).resolve().parents[2] / "configs" / "classify_tiny.toml"
    if out.exists():
        shutil.rmtree(out)
    simulate(
        task="classify",
        sites=sites,
        rounds=rounds,
        out=out,
        set_=[],
        run_config=[config_file],
        data_dir=data_dir,
        resume=False,
        compare=True,
        synth=True,
        cpus_per_site=1.0,
        gpus_per_site=0.0,
        ray_address=None,
        tracking_uri=None,
    )
