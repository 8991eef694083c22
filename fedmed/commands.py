"""Command lines and environment for the processes fedmed starts.

Benchmarks, tests and the deployment runner launch ``fedmed simulate`` and
Flower's own programs as subprocesses; building those command lines in one
place keeps every caller in step with the CLI's options.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

HERMETIC_ENV: Mapping[str, str] = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "HF_HUB_OFFLINE": "1",
    "YOLO_OFFLINE": "1",
    "MPLBACKEND": "Agg",
}
"""Nothing fedmed starts may phone home, self-update or try a download."""


def apply_hermetic_env() -> None:
    """Set :data:`HERMETIC_ENV` in this process, keeping values the user chose."""
    for key, value in HERMETIC_ENV.items():
        os.environ.setdefault(key, value)


def simulate_command(
    task: str,
    out: Path,
    data_dir: Path,
    sites: int,
    rounds: int,
    run_config: Path | None = None,
    sets: Iterable[str] = (),
    compare: bool = False,
    extra: Iterable[str] = (),
    synth: bool = True,
) -> list[str]:
    """``fedmed simulate`` with this interpreter, as an argument list.

    Args:
        task: Registered task name.
        out: Run directory to write.
        data_dir: Data folder (synthesised by the command when missing and
            ``synth``; the run is then marked synthetic).
        sites: Simulated hospitals.
        rounds: Server rounds.
        run_config: Optional run-config TOML (e.g. ``configs/<task>_tiny.toml``).
        sets: ``key=value`` run-config overrides.
        compare: Also train the local-only and pooled baselines.
        extra: Further options passed through unchanged (e.g. ``--resume``).
        synth: Pass ``--synth`` (benchmarks and tests run on generated data).
    """
    command = [sys.executable, "-m", "fedmed", "simulate", "--task", task]
    command += ["--sites", str(sites), "--rounds", str(rounds)]
    command += ["--out", str(out), "--data-dir", str(data_dir)]
    if run_config is not None:
        command += ["--run-config", str(run_config)]
    for item in sets:
        command += ["--set", item]
    if not compare:
        command.append("--no-compare")
    if synth:
        command.append("--synth")
    return [*command, *extra]
