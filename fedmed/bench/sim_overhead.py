"""Overhead of Flower's simulation runtime over a plain in-process loop.

Both do the same work per round: every site builds the model, loads the
aggregate, trains, sends its update; every site evaluates; the aggregate is
scored on the held-out set. The loop does it sequentially in one process with
no messaging; the simulation runs ``fedmed simulate`` (Ray actors, Flower
messages, validation, checkpoints). Reported: total wall times, the ratio,
the fixed start-up cost (simulation wall minus the sum of its round walls)
and the per-round messaging cost (simulation round minus loop round).

    python benchmarks/sim_overhead.py            # 10 sites, 10 rounds of >= 30 s
    python benchmarks/sim_overhead.py --quick    # 3 sites, seconds
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

from fedmed.bench.results import (
    REPO_ROOT,
    RESULTS_DIR,
    update_benchmarks_md,
    write_result,
)
from fedmed.commands import simulate_command
from fedmed.data.synth_dermamnist import synthesize
from fedmed.tasks import get_task

log = logging.getLogger(__name__)


def loop_rounds(config: dict, sites: int, rounds: int) -> list[float]:
    """Wall seconds of each round done in a plain sequential loop."""
    task = get_task(config)
    state = task.exchanged(task.build_model())
    heldout = task.heldout_data()
    walls = []
    for server_round in range(1, rounds + 1):
        started = time.perf_counter()
        updates, weights = [], []
        for k in range(sites):
            model = task.build_model()
            task.load_exchanged(model, state)
            result = task.fit(
                model,
                task.site_data({"partition-id": k, "num-partitions": sites}),
                {"server-round": server_round},
            )
            updates.append(task.exchanged(model))
            weights.append(result.num_examples)
        state = task.aggregate(updates, weights)
        for k in range(sites):
            model = task.build_model()
            task.load_exchanged(model, state)
            task.evaluate(
                model, task.site_data({"partition-id": k, "num-partitions": sites})
            )
        model = task.build_model()
        task.load_exchanged(model, state)
        task.evaluate_heldout(model, heldout)
        walls.append(time.perf_counter() - started)
    return walls


def simulation(
    config_file: Path, data: Path, out: Path, sites: int, rounds: int, sets: list[str]
):
    """Total wall and per-round walls of ``fedmed simulate`` on the same work."""
    cmd = simulate_command(
        "classify", out, data, sites, rounds, run_config=config_file, sets=sets
    )
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    total = time.perf_counter() - started
    records = [
        json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x
    ]
    per_round = {}
    for r in records:
        per_round[r["round"]] = per_round.get(r["round"], 0.0) + r["wall_s"]
    return total, [per_round[k] for k in sorted(per_round) if k > 0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--rounds", type=int, default=10, help="Rounds (the start-up is paid once)."
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    sites, rounds = (3, 1) if args.quick else (10, args.rounds)
    samples, epochs = (60, 1) if args.quick else (2000, 3)
    config_file = REPO_ROOT / "configs" / "classify_tiny.toml"
    sets = [f"classify.local-epochs={epochs}"]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        synthesize(data, sites, samples_per_site=samples, seed=1)
        config = {
            **tomllib.loads(config_file.read_text()),
            "data-dir": str(data),
            "classify.local-epochs": epochs,
        }
        loop = loop_rounds(config, sites, rounds)
        sim_total, sim_rounds = simulation(
            config_file, data, Path(tmp) / "run", sites, rounds, sets
        )
    loop_total = sum(loop)
    row = {
        "sites": sites,
        "rounds": rounds,
        "sim_wall_s": sim_total,
        "loop_wall_s": loop_total,
        "overhead_ratio": sim_total / loop_total,
        "loop_round_s": loop_total / rounds,
        "sim_round_s": sum(sim_rounds) / len(sim_rounds),
        "startup_s": sim_total - sum(sim_rounds),
        "per_round_messaging_s": (sum(sim_rounds) - loop_total) / rounds,
        "rounds_only_ratio": sum(sim_rounds) / loop_total,
    }
    command = "python benchmarks/sim_overhead.py" + (
        " --quick" if args.quick else f" --rounds {rounds}"
    )
    notes = (
        "Same work in both: per round every site trains (tiny ViT, "
        f"{epochs} local epochs on {samples} synthetic samples), every site evaluates, "
        "the aggregate is scored on the held-out set. The simulation runs 2 Ray actors "
        "on 2 cores; startup_s (Ray start, imports, run directory, final plots) is "
        "paid once per run, so overhead_ratio = (startup_s + rounds * sim_round_s) / "
        "(rounds * loop_round_s) falls towards rounds_only_ratio as runs get longer. "
        "per_round_messaging_s = sim_round_s - loop_round_s: Flower's messaging, "
        "serialisation and actor scheduling per round, net of any difference in "
        "compute speed between two one-thread actors and the two-thread loop; a "
        "negative value means that difference outweighs the messaging cost."
    )
    write_result(
        "sim_overhead", [row], command, notes=notes, results_dir=args.results_dir
    )
    if args.results_dir == RESULTS_DIR:
        update_benchmarks_md()
    log.info("%s", json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
