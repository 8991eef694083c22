"""``fedmed data synth <kind>``: synthetic data in the real on-disk formats."""

from __future__ import annotations

from pathlib import Path

import typer

from fedmed.cli.options import console

data_app = typer.Typer(help="Data utilities.", no_args_is_help=True)
synth_app = typer.Typer(
    help="Write synthetic data in the real on-disk formats.", no_args_is_help=True
)
data_app.add_typer(synth_app, name="synth")


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
    from fedmed.data.medmnist_npz import SIZES
    from fedmed.data.sites import writing_synthetic
    from fedmed.data.synth_dermamnist import synthesize

    if size not in SIZES:
        raise typer.BadParameter(
            f"--size must be one of {', '.join(map(str, SIZES))} (the official "
            f"MedMNIST sizes), found {size}"
        )
    with (
        console.status(f"writing {sites} synthetic DermaMNIST sites to {out}"),
        writing_synthetic(out, "dermamnist"),
    ):
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
    from fedmed.data.sites import writing_synthetic
    from fedmed.data.synth_brats import synthesize

    if naming not in ("2021", "2023", "mixed"):
        raise typer.BadParameter("--naming must be 2021, 2023 or mixed")
    with (
        console.status(f"writing {sites} synthetic BraTS sites to {out}"),
        writing_synthetic(out, "brats"),
    ):
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
    from fedmed.data.sites import writing_synthetic
    from fedmed.data.synth_cxr import synthesize

    with (
        console.status(f"writing {sites} synthetic chest X-ray sites to {out}"),
        writing_synthetic(out, "cxr-reports"),
    ):
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
    from fedmed.data.sites import writing_synthetic
    from fedmed.data.synth_highres import write_synthetic_highres

    with (
        console.status(f"writing {sites} synthetic high-res sites to {out}"),
        writing_synthetic(out, "highres"),
    ):
        write_synthetic_highres(out, sites, seed, size, images, heldout_images)
    console.print(f"wrote {out}")
