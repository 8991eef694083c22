"""``fedmed certs`` and ``fedmed deploy ...``: secure multi-site deployment commands."""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console

from fedmed.cli.site import sites_app

deploy_app = typer.Typer(
    help="Run the federation as real SuperLink/SuperNode processes (TLS + node auth).",
    no_args_is_help=True,
)
console = Console()
REPO_ROOT = Path(__file__).resolve().parents[2]


def certs(
    out: Path = typer.Option(Path("certs"), help="Folder docker-compose.yml mounts."),
    san: list[str] = typer.Option(
        [], "--san", help="DNS name/IP sites dial (the gate's host; repeatable)."
    ),
    force: bool = typer.Option(
        False, help="Regenerate everything (every site then needs the new ca.crt)."
    ),
    renew: bool = typer.Option(
        False, help="Re-issue the SuperLink certificate from the same CA."
    ),
) -> None:
    """Write the CA, the SuperLink TLS certificate and the SuperExec secret.

    Site keys are made by each site ('fedmed site init'), never here.
    """
    from fedmed.deploy.certs import (
        ensure_certificates,
        renew_superlink_cert,
        superlink_cert_names,
    )

    layout = ensure_certificates(out, extra_names=san, force=force)
    if renew:
        expiry = renew_superlink_cert(layout)
        console.print(f"SuperLink certificate renewed, valid until {expiry:%Y-%m-%d}")
    console.print(f"CA certificate:      {layout.ca_cert}  (ca.key: keep offline)")
    console.print(
        f"SuperLink TLS cert:  {layout.superlink_cert}  "
        f"valid for {', '.join(superlink_cert_names(layout))}"
    )
    console.print(f"SuperExec secret:    {layout.superexec_secret}")


def _progress(row: dict) -> None:
    aggregated = ", ".join(
        f"{k}={v:.4g}"
        for k, v in row.get("aggregated", {}).items()
        if isinstance(v, int | float)
    )
    sites = len(row.get("sites", {}))
    console.print(f"round {row['round']} {row['phase']}: {sites} sites  {aggregated}")


def _roles(roles: str, sites: int) -> list[str | None]:
    if not roles:
        return [None] * sites
    names = [r.strip() for r in roles.split(",")]
    if len(names) != sites:
        raise typer.BadParameter(
            f"--roles needs {sites} comma-separated roles, "
            f"found {len(names)}: {roles!r}"
        )
    return names  # type: ignore[return-value]


@deploy_app.command("local")
def local(
    sites: int = typer.Option(3, min=1),
    task: str = typer.Option("classify", help="Registered task name."),
    rounds: int = typer.Option(3, min=1),
    out: Path = typer.Option(Path("runs/deploy"), help="Run directory."),
    data_dir: Path | None = typer.Option(
        None, help="Folder with site_<k>/ (+ heldout/); default data/<task>."
    ),
    run_config: list[Path] = typer.Option([], "--run-config", help="Override TOML."),
    set_: list[str] = typer.Option([], "--set", help="Run-config override key=value."),
    roles: str = typer.Option("", help="Per-site node role (VFL), comma-separated."),
    workdir: Path | None = typer.Option(
        None, help="Logs, state DB, Flower home (default: a new temp folder)."
    ),
    certs_dir: Path | None = typer.Option(
        None, "--certs", help="Certificates (default <workdir>/certs, generated)."
    ),
    resume: bool = typer.Option(False, help="Continue the run in --out."),
    synth: bool = typer.Option(
        False, "--synth", help="Write SYNTHETIC data into a missing data folder."
    ),
    timeout_s: float = typer.Option(3600.0, "--timeout", help="Seconds for the run."),
    max_resubmits: int = typer.Option(2, help="Resumes after a failed Flower run."),
) -> None:
    """SuperLink + N SuperNodes on 127.0.0.1 with TLS and node auth, then the run."""
    from fedmed.cli.options import parse_set
    from fedmed.config.run_config import resolve_run_config
    from fedmed.deploy.local_run import run_local

    config = resolve_run_config(
        task,
        rounds=rounds,
        out=out.resolve(),
        data_dir=data_dir.resolve() if data_dir else None,
        files=run_config,
        overrides=parse_set(set_),
        resume=resume,
    )
    from fedmed.cli.preflight import check_data_folder
    from fedmed.data.sites import is_synthetic

    data_root = Path(str(config["data-dir"]))
    synth = check_data_folder(data_root, synth)  # a typo is refused, not synthesised
    if synth or is_synthetic(data_root):
        config["synthetic-data"] = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = (workdir or Path(tempfile.mkdtemp(prefix="fedmed-deploy-"))).resolve()
    started = time.perf_counter()
    outcome = run_local(
        config,
        REPO_ROOT,
        work,
        sites=sites,
        roles=_roles(roles, sites),
        certs_dir=certs_dir,
        synth=synth,
        timeout_s=timeout_s,
        max_resubmits=max_resubmits,
        on_row=_progress,
        say=console.print,
    )
    console.print(
        f"run directory: {outcome.run_dir}  ({outcome.rounds_completed} rounds, "
        f"{len(outcome.run_ids)} Flower run(s), {time.perf_counter() - started:.0f} s)"
    )


@deploy_app.command("compose")
def compose(
    out: Path = typer.Option(REPO_ROOT / "docker-compose.yml"),
    site_kit: Path = typer.Option(REPO_ROOT / "docker" / "site.compose.yml"),
) -> None:
    """Write the coordinator's docker-compose.yml and the site kit template."""
    from fedmed.deploy.compose import render_coordinator, render_site

    out.write_text(render_coordinator())
    site_kit.write_text(render_site())
    console.print(f"wrote {out} and {site_kit}")


@deploy_app.command("app-hash")
def app_hash(
    app: Path = typer.Argument(REPO_ROOT, help="Flower App folder."),
    files: bool = typer.Option(False, "--files", help="Also list the FAB's files."),
) -> None:
    """SHA-256 of the FAB 'flwr run APP' submits: what sites pin."""
    from fedmed.deploy.app_pin import build_fab, fab_files, fab_sha256

    fab = build_fab(app)
    console.print(fab_sha256(fab))
    if files:
        for name in fab_files(fab):
            console.print(f"  {name}")


deploy_app.add_typer(sites_app, name="site")
