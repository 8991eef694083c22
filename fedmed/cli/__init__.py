"""The ``fedmed`` command: synthesise data, simulate, report, demo."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import typer
from rich.console import Console

from fedmed.cli.bench import bench_app
from fedmed.cli.deploy import certs, deploy_app
from fedmed.cli.options import parse_set
from fedmed.commands import apply_hermetic_env

app = typer.Typer(
    help="Federated fine-tuning of medical-imaging foundation models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Data utilities.", no_args_is_help=True)
synth_app = typer.Typer(
    help="Write synthetic data in the real on-disk formats.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
data_app.add_typer(synth_app, name="synth")
app.add_typer(deploy_app, name="deploy")
app.command("certs")(certs)
app.add_typer(bench_app, name="bench")
console = Console()


@synth_app.command("dermamnist")
def synth_dermamnist(
    out: Path = typer.Option(
        ..., help="Output folder (site_<k>/ and heldout/ inside)."
    ),
    sites: int = typer.Option(3, min=1),
    size: int = typer.Option(28, help="28, 64, 128 or 224 (the official sizes)."),
    seed: int = typer.Option(0),
    samples_per_site: int = typer.Option(600, min=10),
    label_alpha: float = typer.Option(
        1.0, help="Dirichlet alpha of per-site label skew."
    ),
) -> None:
    """Synthetic DermaMNIST npz files (medmnist format), with per-site shift."""
    from fedmed.data.synth_dermamnist import synthesize

    with console.status(f"writing {sites} synthetic DermaMNIST sites to {out}"):
        paths = synthesize(out, sites, size, seed, samples_per_site, label_alpha)
    for path in paths:
        console.print(f"wrote {path}")


@synth_app.command("brats")
def synth_brats(
    out: Path = typer.Option(..., help="Output folder (site_<k>/ and heldout/)."),
    sites: int = typer.Option(3, min=1),
    cases: int = typer.Option(4, min=1, help="Cases per site."),
    seed: int = typer.Option(0),
    naming: str = typer.Option(
        "mixed",
        help="2021 (<case>_flair.nii.gz), 2023 (-t2f) or mixed "
        "(even sites 2021, odd 'Africa-like' sites 2023).",
    ),
) -> None:
    """Synthetic BraTS phantoms as NIfTI (tumour core, oedema, enhancing rim)."""
    from fedmed.data.synth_brats import synthesize

    if naming not in ("2021", "2023", "mixed"):
        raise typer.BadParameter("--naming must be 2021, 2023 or mixed")
    with console.status(f"writing {sites} synthetic BraTS sites to {out}"):
        paths = synthesize(out, sites, cases, seed=seed, naming=naming)
    for path in paths:
        console.print(f"wrote {path}")


@synth_app.command("cxr-reports")
def synth_cxr_reports(
    out: Path = typer.Option(..., help="Output folder (site_<k>/ and heldout/)."),
    sites: int = typer.Option(3, min=1),
    cases: int = typer.Option(60, min=1, help="Image/report pairs per site."),
    heldout_cases: int = typer.Option(30, min=1),
    size: int = typer.Option(64, min=16, help="Image side in pixels."),
    seed: int = typer.Option(0),
) -> None:
    """Synthetic chest X-rays whose report words control the visible findings."""
    from fedmed.data.synth_cxr import synthesize

    with console.status(f"writing {sites} synthetic chest X-ray sites to {out}"):
        paths = synthesize(out, sites, seed, size, cases, heldout_cases)
    for path in paths:
        console.print(f"wrote {path}")


@synth_app.command("highres")
def synth_highres(
    out: Path = typer.Option(..., help="Output folder (site_<k>/ and heldout/)."),
    sites: int = typer.Option(3, min=1),
    images: int = typer.Option(64, min=1, help="Images per site."),
    heldout_images: int = typer.Option(64, min=1),
    size: int = typer.Option(512, min=16, help="Image side in pixels."),
    seed: int = typer.Option(0),
) -> None:
    """Synthetic high-resolution images + labels.csv (ISIC/Messidor folder layout)."""
    from fedmed.data.synth_highres import write_synthetic_highres

    with console.status(f"writing {sites} synthetic high-res sites to {out}"):
        write_synthetic_highres(out, sites, seed, size, images, heldout_images)
    console.print(f"wrote {out}")


@app.command()
def simulate(
    task: str = typer.Option("classify", help="Registered task name."),
    sites: int = typer.Option(3, min=1),
    rounds: int = typer.Option(3, min=1),
    out: Path = typer.Option(Path("runs/sim"), help="Run directory."),
    set_: list[str] = typer.Option([], "--set", help="Run-config override key=value."),
    run_config: list[Path] = typer.Option(
        [], "--run-config", help="Override TOML file(s)."
    ),
    data_dir: Path | None = typer.Option(
        None, help="Site data folder (default data/<task>)."
    ),
    resume: bool = typer.Option(
        False, help="Continue a killed run from its checkpoint."
    ),
    compare: bool = typer.Option(
        True, help="Also train local-only and pooled baselines."
    ),
    synth: bool = typer.Option(
        True, help="Write synthetic data if the data folder is missing."
    ),
    cpus_per_site: float = typer.Option(1.0),
    gpus_per_site: float = typer.Option(
        0.0, help="Fractional: 0.25 = 4 sites per GPU."
    ),
) -> None:
    """Simulate N hospitals on this machine (Flower simulation runtime, Ray)."""
    apply_hermetic_env()
    from fedmed.config.run_config import resolve_run_config
    from fedmed.report import print_report
    from fedmed.runs import RunDirectory
    from server.simulation import run_experiment

    config = resolve_run_config(
        task,
        rounds=rounds,
        out=out,
        data_dir=data_dir,
        files=run_config,
        overrides=parse_set(set_),
        resume=resume,
    )
    started = time.perf_counter()
    path = run_experiment(
        config,
        sites,
        compare=compare and not resume,
        synth=synth,
        cpus_per_site=cpus_per_site,
        gpus_per_site=gpus_per_site,
    )
    print_report(RunDirectory(path), console)
    console.print(f"run directory: {path}  ({time.perf_counter() - started:.0f} s)")


@app.command()
def report(run: Path = typer.Argument(..., help="Run directory.")) -> None:
    """Print a run's tables and (re)draw its plots."""
    from fedmed.report import plot_run, print_report
    from fedmed.runs import RunDirectory

    directory = RunDirectory(run)
    plots = plot_run(directory)
    print_report(directory, console)
    for plot in plots:
        console.print(f"plot: {plot}")


@app.command()
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
    )


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    app()
