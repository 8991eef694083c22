"""``fedmed bench``: the privacy, communication, scale and fault benchmarks.

Each subcommand measures, then writes three things: ``<out>/<bench>.json``
(rows plus the per-round detail behind the plots), the contract file
``benchmarks/results/<bench>.json`` (DESIGN.md, via ``write_result``; the
folder is the working directory's) with its PNG next to it, and, when the
contract file is the repository's, BENCHMARKS.md regenerated. ``--quick`` runs
a reduced grid on tiny configurations (minutes on two CPU cores) and writes
to ``benchmarks/results/quick/``: it never overwrites full results or
BENCHMARKS.md.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from fedmed.bench.registry import BENCHES
from fedmed.bench.results import (
    REPO_ROOT,
    RESULTS_DIR,
    update_benchmarks_md,
    write_result,
)

log = logging.getLogger(__name__)

bench_app = typer.Typer(
    help="Privacy, communication, scale and fault benchmarks.", no_args_is_help=True
)
QUICK = typer.Option(False, "--quick", help="Reduced grid on tiny configs.")
OUT = typer.Option(Path("runs/bench"), "--out", help="Folder for JSON and work files.")
RESULTS = typer.Option(
    None,
    "--results-dir",
    help="Contract results folder (default ./benchmarks/results, and its quick/ "
    "subfolder with --quick).",
)
QUICK_SUBDIR = "quick"


def results_folder(results_dir: Path | None, quick: bool) -> Path:
    """Where a bench writes its contract file: quick runs never share full's."""
    if results_dir is not None:
        return Path(results_dir)
    default = Path.cwd() / "benchmarks" / "results"
    return default / QUICK_SUBDIR if quick else default


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path.resolve())


def publish(
    bench: str,
    rows: list[dict],
    detail: dict[str, Any],
    *,
    quick: bool,
    out: Path,
    results_dir: Path,
    notes: str,
    plot: Callable[[Path], Path],
) -> Path:
    """Write the run JSON, the contract JSON + PNG, and regenerate BENCHMARKS.md."""
    name = BENCHES[bench].contract
    png = plot(Path(results_dir) / f"{name}.png")
    command = f"fedmed bench {bench}" + (" --quick" if quick else "")
    contract = write_result(
        name,
        rows,
        command,
        notes=notes,
        plots=[_relative(png)],
        results_dir=Path(results_dir),
    )
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "bench": bench,
        "quick": quick,
        "command": command,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "contract": _relative(contract),
        "plot": _relative(png),
        "rows": rows,
        "detail": detail,
    }
    (out / f"{bench}.json").write_text(
        json.dumps(payload, indent=2, default=str) + "\n"
    )
    if not quick and Path(results_dir).resolve() == RESULTS_DIR.resolve():
        update_benchmarks_md()
    return out / f"{bench}.json"


def _work(out: Path, bench: str) -> Path:
    folder = out / "work" / bench
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def run_bench(
    bench: str, quick: bool, out: Path, results_dir: Path | None = None
) -> Path:
    """Measure ``bench`` and publish it; the run JSON's path.

    What to measure, the prose and the figure are the bench's entry in
    :data:`fedmed.bench.registry.BENCHES`, which loads torch only when a bench
    runs, so ``fedmed --help`` stays fast.
    """
    from fedmed.commands import apply_hermetic_env

    apply_hermetic_env()
    # a terminated bench unwinds, stopping the deployments and network
    # namespaces it started (Python's default SIGTERM exits without cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import torch

    # One intra-op thread, as a simulated site (Ray actor) has: in-process
    # rounds then cost the same work per site, and stay steady on a shared box.
    torch.set_num_threads(1)
    entry = BENCHES[bench]
    results_dir = results_folder(results_dir, quick)
    rows, detail = entry.measure(quick, _work(out, bench))
    return publish(
        bench,
        rows,
        detail,
        quick=quick,
        out=out,
        results_dir=results_dir,
        notes=entry.notes(rows, detail),
        plot=lambda path: entry.plot(rows, detail, path),
    )


def _register(bench: str) -> None:
    def command(
        quick: bool = QUICK, out: Path = OUT, results_dir: Path | None = RESULTS
    ):
        run_bench(bench, quick, out, results_dir)

    command.__doc__ = BENCHES[bench].summary
    bench_app.command(bench)(command)


for _bench in BENCHES:
    _register(_bench)


@bench_app.command("all")
def run_all(
    quick: bool = QUICK, out: Path = OUT, results_dir: Path | None = RESULTS
) -> None:
    """Every bench in turn (``--quick``: under ten minutes on two CPU cores)."""
    for bench in BENCHES:
        started = time.perf_counter()
        run_bench(bench, quick, out, results_dir)
        typer.echo(f"{bench}: {time.perf_counter() - started:.0f} s")
