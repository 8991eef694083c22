"""``fedmed deploy local``: a whole closed deployment and one run, on this machine.

Lays out the coordinator (``<work>/certs``, ``<work>/state``) and one folder per
site (``<work>/sites/site-<k>``, key pair made there), starts the processes,
pins the app about to be submitted at every site (what each hospital does
after reviewing a release), and drives the run to its last round.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from fedmed.config import Scalar, parse_platform
from fedmed.deploy.certs import ensure_certificates
from fedmed.deploy.local import LocalDeployment
from fedmed.deploy.site_keys import SiteFolder, init_site
from fedmed.deploy.topology import Placement, Site
from fedmed.deploy.watch import ProgressFn, RunOutcome, drive_run


def site_folders(work: Path, count: int) -> list[Path]:
    """``<work>/sites/site-<k>``, each with a key pair made in it (kept if present)."""
    folders = []
    for k in range(count):
        folder = Path(work) / "sites" / f"site-{k}"
        if not SiteFolder(folder).key.is_file():
            init_site(folder, f"site-{k}")
        folders.append(folder)
    return folders


def local_sites(
    work: Path,
    data_root: Path,
    roles: Sequence[str | None],
    placements: Sequence[Placement] | None = None,
) -> list[Site]:
    """One ``Site`` per role: its folder under ``work``, data ``site_<k>``."""
    folders = site_folders(work, len(roles))
    placements = placements or [Placement()] * len(roles)
    return [
        Site(
            k,
            Path(data_root) / f"site_{k}",
            folders[k],
            role=role,
            placement=placements[k],
        )
        for k, role in enumerate(roles)
    ]


def deployment_defaults(config: Mapping[str, Scalar]) -> dict[str, Scalar]:
    """``config`` with one message per round (``evaluate-with-train``) unless
    it says otherwise or cannot have it (secure aggregation, sampled sites):
    a deployed round pays for every message, a simulated one hardly does."""
    config = dict(config)
    if "evaluate-with-train" not in config:
        platform = parse_platform(config)
        config["evaluate-with-train"] = platform.fits_one_message_rounds
    return config


def run_local(
    config: Mapping[str, Scalar],
    app_dir: Path,
    work: Path,
    *,
    sites: int,
    roles: Sequence[str | None],
    certs_dir: Path | None = None,
    synth: bool = False,
    timeout_s: float = 3600.0,
    max_resubmits: int = 2,
    on_row: ProgressFn | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> RunOutcome:
    """Start the deployment, run ``config`` to its end, stop every process."""
    from fedmed.tasks import get_task

    config = deployment_defaults(config)
    data_root = Path(str(config["data-dir"])).resolve()
    config["data-dir"] = str(data_root)
    if synth and not data_root.exists():
        task = config["task.name"]
        say(f"writing synthetic {task} data for {sites} sites to {data_root}")
        get_task(config).synthesize_data(data_root, sites, int(config.get("seed", 0)))
    layout = ensure_certificates(certs_dir or work / "certs")
    members = local_sites(work, data_root, roles)
    with LocalDeployment(work, layout, members) as deployment:
        deployment.start()
        digest = deployment.trust_app(app_dir)
        say(
            f"SuperLink on {deployment.control_address} (coordinator only), sites "
            f"dial the Fleet gate on {deployment.fleet_address}; app {digest[:12]} "
            f"pinned at {sites} sites; logs in {work / 'logs'}"
        )
        return drive_run(
            deployment,
            app_dir,
            config,
            timeout_s=timeout_s,
            max_resubmits=max_resubmits,
            on_row=on_row,
        )
