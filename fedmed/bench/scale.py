"""Simulation scale: 2 -> 50 sites on one box, time, memory and runtime overhead.

Each configuration runs ``fedmed simulate`` (Flower's simulation runtime on
Ray, tiny LoRA classifier on synthetic DermaMNIST) in a child process while
a sampler reads the resident memory (RSS, psutil) of every process in its
tree every ``SAMPLE_S`` seconds, attributing each sample to the round in
progress (counted from ``metrics.jsonl``). Ray runs one ClientApp actor per
CPU and each actor serves the sites one message at a time, so the peak RSS
of an actor process is the peak memory of a site. The reference is
``fedmed.bench.loop`` doing the same work (every site trains, every site
evaluates) sequentially in one process on one thread; ``overhead_ratio`` is
simulation round wall / loop round wall over the rounds after the first.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch

from fedmed.bench.comm import tiny_config
from fedmed.bench.loop import federated_loop
from fedmed.bench.results import REPO_ROOT
from fedmed.commands import simulate_command
from fedmed.data.synth_dermamnist import synthesize

log = logging.getLogger(__name__)

SAMPLE_S = 0.25
MB = 1024.0 * 1024.0
#: Ray names a ClientApp actor's worker process after the actor class.
ACTOR_MARKER = "ClientAppActor"
TINY_CONFIG = REPO_ROOT / "configs" / "classify_tiny.toml"


@dataclass
class MemoryTrace:
    """Peak RSS per process kind and per round, sampled from a process tree."""

    peak_total_mb: float = 0.0
    peak_actor_mb: float = 0.0
    actors: set[int] = field(default_factory=set)
    round_peak_actors_mb: dict[int, float] = field(default_factory=dict)


def _train_rounds(metrics: Path) -> int:
    try:
        lines = metrics.read_text().splitlines()
    except OSError:
        return 0
    return sum(1 for x in lines if '"phase": "train"' in x)


def _sample(root: psutil.Process, metrics: Path, trace: MemoryTrace) -> None:
    total, actors = 0.0, 0.0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for proc in procs:
        try:
            rss = proc.memory_info().rss / MB
            label = proc.name() + " " + " ".join(proc.cmdline())
        except psutil.Error:
            continue
        total += rss
        if ACTOR_MARKER in label:
            trace.actors.add(proc.pid)
            actors += rss
            trace.peak_actor_mb = max(trace.peak_actor_mb, rss)
    trace.peak_total_mb = max(trace.peak_total_mb, total)
    current = _train_rounds(metrics) + 1
    previous = trace.round_peak_actors_mb.get(current, 0.0)
    trace.round_peak_actors_mb[current] = max(previous, actors)


def sample_tree(pid: int, metrics: Path, stop: threading.Event) -> MemoryTrace:
    """Sample ``pid``'s process tree until ``stop`` is set (run in a thread)."""
    trace = MemoryTrace()
    root = psutil.Process(pid)
    while not stop.is_set():
        _sample(root, metrics, trace)
        stop.wait(SAMPLE_S)
    return trace


def measure_simulation(sites: int, rounds: int, data: Path, out: Path) -> dict:
    """Run one simulation under the memory sampler; walls and memory figures."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        simulate_command("classify", out, data, sites, rounds, run_config=TINY_CONFIG),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop, box = threading.Event(), {}
    thread = threading.Thread(
        target=lambda: box.update(
            trace=sample_tree(proc.pid, out / "metrics.jsonl", stop)
        )
    )
    thread.start()
    _, stderr = proc.communicate()
    stop.set()
    thread.join()
    total = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"simulation of {sites} sites failed:\n{stderr[-3000:]}")
    records = [
        json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x
    ]
    walls: dict[int, float] = {}
    for r in records:
        if r["round"] > 0:
            walls[r["round"]] = walls.get(r["round"], 0.0) + float(r["wall_s"])
    trace: MemoryTrace = box["trace"]
    per_round = [trace.round_peak_actors_mb.get(k, 0.0) for k in sorted(walls)]
    return {
        "total_s": total,
        "round_walls": [walls[k] for k in sorted(walls)],
        "trace": trace,
        "round_actor_mb": per_round,
    }


def _loop_with_memory(
    config: dict, sites: int, rounds: int
) -> tuple[list[float], float]:
    """Round walls and peak RSS of the plain loop, on one thread like an actor.

    Ray starts each ClientApp actor with one CPU (``OMP_NUM_THREADS=1``), so
    the loop's sites get one intra-op thread too.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    me = psutil.Process()
    peak, stop = [me.memory_info().rss / MB], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak.append(me.memory_info().rss / MB)
            stop.wait(SAMPLE_S)

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        walls = federated_loop(config, sites, rounds, evaluate_sites=True).round_walls_s
    finally:
        stop.set()
        thread.join()
        torch.set_num_threads(threads)
    return walls, max(peak)


def _steady(walls: list[float]) -> float:
    """Mean wall of the rounds after the first (which pays the warm-up)."""
    later = walls[1:] or walls
    return sum(later) / len(later)


def scale_row(sites: int, rounds: int, sim: dict, loop_walls, loop_peak) -> dict:
    """One contract row: simulation vs loop round walls and memory."""
    trace, actor_mb = sim["trace"], sim["round_actor_mb"]
    sim_round, loop_round = _steady(sim["round_walls"]), _steady(loop_walls)
    return {
        "sites": sites,
        "rounds": rounds,
        "actors": len(trace.actors),
        "sim_total_s": sim["total_s"],
        "startup_s": sim["total_s"] - sum(sim["round_walls"]),
        "sim_first_round_s": sim["round_walls"][0],
        "sim_round_s": sim_round,
        "loop_round_s": loop_round,
        "overhead_ratio": sim_round / loop_round,
        "sim_round_per_site_s": sim_round / sites,
        "peak_site_rss_mb": trace.peak_actor_mb,
        "peak_total_rss_mb": trace.peak_total_mb,
        "loop_peak_rss_mb": loop_peak,
        "actor_rss_growth_mb": actor_mb[-1] - actor_mb[0] if actor_mb else 0.0,
    }


def run_scale(quick: bool, work_dir: Path) -> tuple[list[dict], dict]:
    """One row per site count: sim vs loop round walls, memory, growth."""
    counts, rounds, samples = (
        ((2, 4, 8), 2, 100) if quick else ((2, 5, 10, 20, 50), 3, 200)
    )
    data = work_dir / "scale-data"
    synthesize(data, max(counts), samples_per_site=samples, seed=3, heldout_samples=200)
    config = {**tiny_config("classify"), "data-dir": str(data)}
    rows, detail = [], {}
    for sites in counts:
        sim = measure_simulation(sites, rounds, data, work_dir / f"scale-run-{sites}")
        loop_walls, loop_peak = _loop_with_memory(config, sites, rounds)
        rows.append(scale_row(sites, rounds, sim, loop_walls, loop_peak))
        detail[str(sites)] = {
            "sim_round_walls_s": sim["round_walls"],
            "loop_round_walls_s": loop_walls,
            "actor_rss_per_round_mb": sim["round_actor_mb"],
        }
        log.info("scale %d sites: %s", sites, rows[-1])
    return rows, detail
