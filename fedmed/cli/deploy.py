"""``fedmed certs`` and ``fedmed deploy ...``: secure multi-site deployment commands."""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console

deploy_app = typer.Typer(
    help="Run the federation as real SuperLink/SuperNode processes (TLS + node auth).",
    no_args_is_help=True,
)
console = Console()
REPO_ROOT = Path(__file__).resolve().parents[2]


def certs(
    out: Path = typer.Option(Path("certs"), help="Folder docker-compose.yml mounts."),
    sites: int = typer.Option(3, min=1, help="Sites that get an authentication key."),
    san: list[str] = typer.Option(
        [], "--san", help="Extra DNS name/IP of the SuperLink (repeatable)."
    ),
    force: bool = typer.Option(
        False, help="Regenerate everything (all sites must be re-registered)."
    ),
) -> None:
    """Write the CA, the SuperLink TLS certificate and one key pair per site."""
    from fedmed.deploy.certs import ensure_certificates, superlink_cert_names

    layout = ensure_certificates(out, sites, extra_names=san, force=force)
    console.print(f"CA certificate:      {layout.ca_cert}  (ca.key: keep offline)")
    console.print(
        f"SuperLink TLS cert:  {layout.superlink_cert}  "
        f"valid for {', '.join(superlink_cert_names(layout))}"
    )
    for site_id in layout.site_ids():
        console.print(
            f"site {site_id}: private key {layout.site_key(site_id)} (copy to that "
            f"site only), public key {layout.site_public_key(site_id)}"
        )


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


def _site_data(config: dict, sites: int, synth: bool) -> Path:
    """The run's data folder, made absolute; synthetic data when it is missing."""
    from fedmed.tasks import get_task

    data_root = Path(str(config["data-dir"])).resolve()
    config["data-dir"] = str(data_root)
    if synth and not data_root.exists():
        task = get_task(config)
        console.print(
            f"writing synthetic {task.name} data for {sites} sites to {data_root}"
        )
        task.synthesize_data(data_root, sites, task.seed)
    return data_root


def _sites(data_root: Path, roles: list[str | None]) -> list:
    """One local SuperNode per site, each on a free port with its data folder."""
    from fedmed.deploy.local import Site, free_port

    return [
        Site(k, data_root / f"site_{k}", free_port(), role)
        for k, role in enumerate(roles)
    ]


def _run_deployment(work, layout, site_list, config, timeout_s, max_resubmits):
    """Start the SuperLink and SuperNodes, drive the run to its end, stop them."""
    from fedmed.deploy.local import LocalDeployment
    from fedmed.deploy.watch import drive_run

    with LocalDeployment(work, layout, site_list) as deployment:
        console.print(
            f"SuperLink on {deployment.address} (TLS, node auth); logs in "
            f"{work / 'logs'}"
        )
        deployment.start()
        return drive_run(
            deployment,
            REPO_ROOT,
            config,
            timeout_s=timeout_s,
            max_resubmits=max_resubmits,
            on_row=_progress,
        )


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
    synth: bool = typer.Option(True, help="Write synthetic data if missing."),
    timeout_s: float = typer.Option(3600.0, "--timeout", help="Seconds for the run."),
    max_resubmits: int = typer.Option(2, help="Resumes after a failed Flower run."),
) -> None:
    """SuperLink + N SuperNodes on 127.0.0.1 with TLS and node auth, then the run."""
    from fedmed.cli.options import parse_set
    from fedmed.config.run_config import resolve_run_config
    from fedmed.deploy.certs import ensure_certificates

    config = resolve_run_config(
        task,
        rounds=rounds,
        out=out.resolve(),
        data_dir=data_dir.resolve() if data_dir else None,
        files=run_config,
        overrides=parse_set(set_),
        resume=resume,
    )
    data_root = _site_data(config, sites, synth)
    work = (workdir or Path(tempfile.mkdtemp(prefix="fedmed-deploy-"))).resolve()
    layout = ensure_certificates(certs_dir or work / "certs", sites)
    site_list = _sites(data_root, _roles(roles, sites))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    outcome = _run_deployment(work, layout, site_list, config, timeout_s, max_resubmits)
    console.print(
        f"run directory: {outcome.run_dir}  ({outcome.rounds_completed} rounds, "
        f"{len(outcome.run_ids)} Flower run(s), {time.perf_counter() - started:.0f} s)"
    )


@deploy_app.command("register")
def register(
    keys: list[Path] = typer.Argument(..., help="Site public keys (*.pub)."),
    superlink: str = typer.Option(..., help="SuperLink address host:port."),
    root_certificates: Path = typer.Option(..., help="CA certificate (ca.crt)."),
    wait_s: float = typer.Option(120.0, help="How long to wait for the SuperLink."),
) -> None:
    """Register site public keys at a SuperLink (used by docker-compose)."""
    from fedmed.deploy.registration import register_with_retry

    for key in keys:
        node_id = register_with_retry(key, superlink, root_certificates, wait_s)
        state = f"node {node_id}" if node_id else "already registered"
        console.print(f"{key.name}: {state}")


@deploy_app.command("compose")
def compose(
    sites: int = typer.Option(3, min=1),
    roles: str = typer.Option("", help="Per-site node role (VFL), comma-separated."),
    gpu_sites: str = typer.Option("", help="Sites that reserve a GPU, e.g. '0,2'."),
    out: Path = typer.Option(REPO_ROOT / "docker-compose.yml"),
) -> None:
    """Write docker-compose.yml for N sites (matching 'fedmed certs --sites N')."""
    from fedmed.deploy.compose import render_compose

    gpus = {int(x) for x in gpu_sites.split(",") if x.strip()}
    out.write_text(render_compose(sites, roles=_roles(roles, sites), gpu_sites=gpus))
    console.print(f"wrote {out}")
