"""Run the fedmed ServerApp and ClientApp in Flower's simulation runtime (Ray).

Flower's public ``run_simulation`` has no way to pass a run config, so this
module hands the runtime a throw-away app folder whose ``pyproject.toml``
holds the fully resolved run config; every virtual site and the server then
read exactly the same config through ``context.run_config``, as they do
under ``flwr run``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import tomli_w

from fedmed.config import Scalar

log = logging.getLogger(__name__)


def _app_folder(run_config: Mapping[str, Scalar], folder: Path) -> Path:
    project = {
        "project": {"name": "fedmed-simulation", "version": "0.1.0"},
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "fedmed",
                    "components": {
                        "serverapp": "server.server_app:app",
                        "clientapp": "clients.client_app:app",
                    },
                    "config": dict(run_config),
                }
            }
        },
    }
    (folder / "pyproject.toml").write_text(tomli_w.dumps(project))
    return folder


def _ray_init_args(ray_address: str | None, total_cpus: int | None) -> dict:
    """A private Ray sized to this machine, or a connection to a running cluster.

    A cluster brings its own resources: Ray refuses ``num_cpus`` when joining one.
    """
    if ray_address:
        return {"address": ray_address, "include_dashboard": False}
    return {"num_cpus": total_cpus or os.cpu_count() or 1, "include_dashboard": False}


def simulate(
    run_config: Mapping[str, Scalar],
    num_sites: int,
    *,
    cpus_per_site: float = 1.0,
    gpus_per_site: float = 0.0,
    total_cpus: int | None = None,
    verbose: bool = False,
    ray_address: str | None = None,
) -> None:
    """Run one federated simulation with ``num_sites`` virtual sites.

    ``gpus_per_site`` may be fractional (0.25 = four sites share one GPU).
    ``ray_address`` (``HOST:PORT`` of a running cluster's head) runs the sites
    as actors across that cluster's nodes instead of a private Ray on this
    machine; every node resolves the run config's paths (``data-dir``) itself.
    """
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from flwr.app import Context, RecordDict
    from flwr.common import EventType
    from flwr.simulation.run_simulation import _run_simulation

    from clients.client_app import app as client_app
    from server.server_app import app as server_app

    backend_config = {
        "client_resources": {"num_cpus": cpus_per_site, "num_gpus": gpus_per_site},
        "init_args": _ray_init_args(ray_address, total_cpus),
    }
    with tempfile.TemporaryDirectory(prefix="fedmed-app-") as tmp:
        app_dir = _app_folder(run_config, Path(tmp))
        server_context = Context(
            run_id=1,
            node_id=0,
            node_config={},
            state=RecordDict(),
            run_config=dict(run_config),
        )
        result = _run_simulation(
            num_supernodes=num_sites,
            exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
            client_app=client_app,
            server_app=server_app,
            backend_config=backend_config,
            server_app_context=server_context,
            app_dir=str(app_dir),
            is_app=True,
            verbose_logging=verbose,
        )
    if result is not None and getattr(result, "success", True) is False:
        raise RuntimeError("the simulation failed; see the log above")


def run_experiment(
    run_config: Mapping[str, Scalar],
    num_sites: int,
    *,
    compare: bool = True,
    synth: bool = False,
    cpus_per_site: float = 1.0,
    gpus_per_site: float = 0.0,
    ray_address: str | None = None,
) -> Path:
    """Simulate, check the run did what it was asked, add the baselines.

    ``synth`` writes synthetic data into ``data-dir`` first (the caller has
    checked the folder is missing and the user asked for it). A run that
    completed fewer rounds than asked, or where every site failed a phase,
    raises :class:`fedmed.report.RunFailed` and gets no baselines.
    """
    from fedmed.baselines import run_baselines
    from fedmed.config import parse_platform
    from fedmed.data.sites import writing_synthetic
    from fedmed.progress import RoundWatcher
    from fedmed.report import RunFailed, check_run_outcome, plot_run, run_shortfall
    from fedmed.runs import RunDirectory
    from fedmed.tasks import get_task, list_tasks

    platform = parse_platform(run_config, list_tasks())
    task = get_task(run_config)
    if synth:
        log.warning(
            "writing SYNTHETIC %s data for %d sites to %s (asked by --synth)",
            task.name,
            num_sites,
            platform.data_dir,
        )
        with writing_synthetic(platform.data_dir, task.name) as out:
            task.synthesize_data(out, num_sites, platform.seed)
    run = RunDirectory(platform.run_dir)
    try:
        with RoundWatcher(run.metrics_file, platform.num_server_rounds):
            simulate(
                run_config,
                num_sites,
                cpus_per_site=cpus_per_site,
                gpus_per_site=gpus_per_site,
                ray_address=ray_address,
            )
    except RunFailed:
        raise
    except RuntimeError as err:
        records = run.read_metrics()
        shortfall = run_shortfall(records, platform.num_server_rounds)
        raise RunFailed(
            f"run {run.path} failed: {shortfall or 'stopped'}; {err}"
        ) from err
    check_run_outcome(run, platform.num_server_rounds)
    summary = run.read_summary()
    if compare and platform.mode == "federated":
        comparison = {
            "federated": summary.get("final_heldout")
            or summary.get("final_site_evaluation", {})
        }
        comparison.update(
            run_baselines(
                task,
                num_sites,
                platform.num_server_rounds,
                run,
                threads=max(1, int(cpus_per_site)),
            )
        )
        summary["comparison"] = comparison
        run.write_summary(summary)
        plot_run(run)
    return run.path
