"""``fedmed bench deploy``: what a deployed round costs, and what adapters save.

Two measurements, both on the closed deployment of ``fedmed.deploy`` (Fleet
gate, TLS, node authentication, pinned app):

* **fixed cost** (loopback): the fedmed app itself (classify, tiny config,
  one message per round: ``evaluate-with-train``), deployed vs simulated on
  the same data and sites. ``fixed_cost_s_per_site`` is the deployed round
  minus the simulated round, both in steady state (the median of the rounds
  between the first, which warms up, and the last, which adds the final
  evaluate message): each site's per-round overhead (sites run side by side).
* **payload over a link**: a payload-only Flower app moves paper-size updates
  (ViT-B/16 full fine-tuning, its LoRA adapter, FPT's side network + prompts;
  fp32, random values so nothing deduplicates) down to a site and back, over
  loopback and over a site link shaped with tc HTB (network namespaces) at
  each uplink speed. ``fixed_cost_s_per_site`` is the round minus the time the
  bytes need at the link rate (both directions), i.e. what is not wire time.

Rows go to ``benchmarks/results/deploy.json`` (contract in DESIGN.md).
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedmed.bench.notes import deploy_notes
from fedmed.bench.results import (
    REPO_ROOT,
    RESULTS_DIR,
    update_benchmarks_md,
    write_result,
)
from fedmed.commands import simulate_command
from fedmed.deploy.certs import ensure_certificates
from fedmed.deploy.local import LocalDeployment
from fedmed.deploy.local_run import local_sites
from fedmed.deploy.netns import COORDINATOR, NamespaceNetwork, namespaces_available
from fedmed.deploy.watch import drive_run

log = logging.getLogger(__name__)

TINY_CONFIG = REPO_ROOT / "configs" / "classify_tiny.toml"
UPLINKS_MBIT = (100, 50, 10)
FP32 = 4
VIT_B16 = {"classify.model": "vit_base_patch16_224"}
ONE_MESSAGE_ROUNDS = {"evaluate-with-train": True}
PAYLOAD_APP = {
    "pyproject.toml": """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "payload-bench"
version = "1.0.0"

[tool.hatch.build.targets.wheel]
packages = ["payload_bench"]

[tool.flwr.app]
publisher = "fedmed"

[tool.flwr.app.components]
serverapp = "payload_bench.server:app"
clientapp = "payload_bench.client:app"

[tool.flwr.app.config]
params = 1000
rounds = 2
sites = 1
out = ""
""",
    "payload_bench/__init__.py": '"""Moves an update of a given size down and up."""\n',
    "payload_bench/server.py": """\
import json
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


def prompt_send_and_receive(grid, messages, timeout=7200.0, pause=0.05):
    # Flower's deployment grid looks for replies every 3 s; fedmed's ServerApp
    # looks every 50-250 ms (server/prompt_grid.py), and so does this one
    waiting = set(grid.push_messages(messages))
    end, replies = time.monotonic() + timeout, []
    while waiting and time.monotonic() < end:
        arrived = list(grid.pull_messages(waiting))
        replies += arrived
        waiting -= {r.metadata.reply_to_message_id for r in arrived}
        if waiting:
            time.sleep(pause)
    return replies


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    params, sites = int(cfg["params"]), int(cfg["sites"])
    while len(nodes := list(grid.get_node_ids())) < sites:
        time.sleep(1)
    walls, errors = [], 0
    for round_ in range(int(cfg["rounds"])):
        rng = np.random.default_rng(round_)
        update = Array(rng.standard_normal(params, dtype=np.float32))
        started = time.perf_counter()
        messages = [
            Message(RecordDict({"u": ArrayRecord(array_dict={"w": update})}),
                    dst_node_id=node, message_type="train")
            for node in nodes
        ]
        replies = prompt_send_and_receive(grid, messages)
        walls.append(time.perf_counter() - started)
        errors += sum(r.has_error() for r in replies) + sites - len(replies)
    Path(str(cfg["out"])).write_text(json.dumps({"round_s": walls, "errors": errors}))
""",
    "payload_bench/client.py": """\
import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    size = msg.content["u"]["w"].numpy().size
    rng = np.random.default_rng(context.node_id % 2**32)
    update = Array(rng.standard_normal(size, dtype=np.float32))
    content = RecordDict({"u": ArrayRecord(array_dict={"w": update})})
    return Message(content, reply_to=msg)
""",
}


def write_payload_app(folder: Path) -> Path:
    """The payload-only Flower App, written to ``folder``."""
    for name, text in PAYLOAD_APP.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def paper_payloads() -> dict[str, int]:
    """fp32 parameters each mode exchanges at paper size (built on the meta device)."""
    import torch

    from fedmed.tasks import get_task

    settings = {
        "full": {"task.name": "classify", "classify.mode": "full", **VIT_B16},
        "lora": {"task.name": "classify", "classify.mode": "lora", **VIT_B16},
        "fpt": {
            "task.name": "fpt",
            **_toml(REPO_ROOT / "configs" / "fpt_isic2018.toml"),
        },
    }
    sizes = {}
    for mode, config in settings.items():
        task = get_task(config)
        with torch.device("meta"):
            model = task.build_model()
        sizes[mode] = sum(int(t.numel()) for t in task.exchanged(model).values())
    return sizes


def _toml(path: Path) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(path.read_text())


def measure_payload(
    deployment: LocalDeployment, app: Path, params: int, rounds: int, out: Path
) -> list[float]:
    """Round walls of the payload app moving ``params`` fp32 values per direction."""
    overrides = f"params={params} rounds={rounds} sites={len(deployment.sites)}"
    run_id = deployment.submit(app, overrides=f"{overrides} out='{out}'")
    while not deployment.run_status(run_id).startswith("finished"):
        time.sleep(2.0)
    if not out.is_file():
        raise RuntimeError(
            f"payload run {run_id} wrote no result; see {deployment.workdir}"
        )
    result = json.loads(out.read_text())
    if result["errors"]:
        raise RuntimeError(f"payload run {run_id}: {result['errors']} failed replies")
    return [float(x) for x in result["round_s"]]


def payload_row(
    link: str, mbit: float | None, mode: str, params: int, walls: list[float]
) -> dict:
    """One row: steady round wall and its part that is not wire time."""
    round_s = statistics.median(walls[1:] or walls)
    wire_s = 2 * params * FP32 * 8 / (mbit * 1e6) if mbit else 0.0
    return {
        "link": link,
        "uplink_mbit": mbit or 0,
        "mode": mode,
        "payload_mb": round(params * FP32 / 1e6, 2),
        "round_s": round(round_s, 2),
        "first_round_s": round(walls[0], 2),
        "wire_s": round(wire_s, 2),
        "fixed_cost_s_per_site": round(round_s - wire_s, 2),
    }


def _payload_rows(
    deployment: LocalDeployment,
    app: Path,
    link: str,
    rates: Sequence[float | None],
    payloads: dict[str, int],
    rounds: int,
    shape: Callable[[float], None] | None = None,
) -> list[dict]:
    rows = []
    for mbit in rates:
        if shape is not None and mbit:
            shape(mbit)
        for mode, params in payloads.items():
            out = deployment.workdir / f"payload-{link}-{mbit}-{mode}.json"
            # the full model needs minutes per round on a slow link
            count = min(rounds, 2) if mode == "full" else rounds
            if mode == "full" and mbit and mbit < 50:
                count = 1
            walls = measure_payload(deployment, app, params, count, out)
            rows.append(payload_row(link, mbit, mode, params, walls))
            log.info("%s", rows[-1])
    return rows


def loopback_payloads(work: Path, payloads: dict[str, int], rounds: int) -> list[dict]:
    """Payload rounds with coordinator and one site on 127.0.0.1."""
    app = write_payload_app(work / "payload_app")
    layout = ensure_certificates(work / "certs")
    sites = local_sites(work, work / "no-data", [None])
    with LocalDeployment(work, layout, sites) as deployment:
        deployment.start()
        deployment.trust_app(app)
        deployment.wait_online(1)
        return _payload_rows(deployment, app, "loopback", [None], payloads, rounds)


def link_payloads(
    work: Path, payloads: dict[str, int], rounds: int, rates
) -> list[dict]:
    """Payload rounds with the site behind an HTB-shaped link (namespaces)."""
    app = write_payload_app(work / "payload_app")
    with NamespaceNetwork([rates[0]]) as network:
        coordinator = network.address(COORDINATOR)
        layout = ensure_certificates(work / "certs", extra_names=[coordinator])
        sites = local_sites(
            work, work / "no-data", [None], [network.placement("site0")]
        )
        with LocalDeployment(
            work,
            layout,
            sites,
            coordinator=network.placement(COORDINATOR),
            gate_host=coordinator,
        ) as deployment:
            deployment.start()
            deployment.trust_app(app)
            deployment.wait_online(1)
            return _payload_rows(
                deployment,
                app,
                "htb",
                rates,
                payloads,
                rounds,
                lambda r: network.shape(0, r),
            )


def app_fixed_cost(work: Path, sites: int, rounds: int) -> dict:
    """The fedmed app (classify tiny) deployed vs simulated: per-round walls."""
    if rounds < 3:
        raise ValueError("the steady state needs >= 3 rounds (first and last excluded)")
    data = work / "data"
    simulated = _round_walls(_simulate(work / "sim", data, sites, rounds))
    config = {
        **_toml(TINY_CONFIG),
        **ONE_MESSAGE_ROUNDS,
        "num-server-rounds": rounds,
        "run-dir": str(work / "deployed-run"),
        "data-dir": str(data),
    }
    layout = ensure_certificates(work / "certs")
    with LocalDeployment(
        work / "deployed", layout, local_sites(work, data, [None] * sites)
    ) as d:
        d.start()
        d.trust_app(REPO_ROOT)
        outcome = drive_run(d, REPO_ROOT, config, max_resubmits=0)
    deployed = _round_walls(outcome.run_dir)
    steady_dep, steady_sim = (
        statistics.median(deployed[1:-1]),
        statistics.median(simulated[1:-1]),
    )
    return {
        "link": "loopback",
        "uplink_mbit": 0,
        "mode": "fedmed-classify-tiny",
        "sites": sites,
        "round_s": round(steady_dep, 2),
        "first_round_s": round(deployed[0], 2),
        "rounds": rounds,
        "messages_per_round": 1,
        "simulated_round_s": round(steady_sim, 2),
        "fixed_cost_s_per_site": round(steady_dep - steady_sim, 2),
    }


def _simulate(out: Path, data: Path, sites: int, rounds: int) -> Path:
    command = simulate_command(
        "classify",
        out,
        data,
        sites,
        rounds,
        run_config=TINY_CONFIG,
        extra=["--set", "evaluate-with-train=true"],
    )
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"simulation failed:\n{done.stderr[-3000:]}")
    return out


def _round_walls(run_dir: Path) -> list[float]:
    """Train + evaluate wall of each round from the run's metrics.jsonl."""
    walls: dict[int, float] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["round"] > 0 and row["phase"] in ("train", "evaluate"):
            walls[row["round"]] = walls.get(row["round"], 0.0) + float(row["wall_s"])
    return [walls[k] for k in sorted(walls)]


def run_deploy(quick: bool, work_dir: Path) -> tuple[list[dict], dict]:
    """All rows; ``quick`` drops the full-size payload and uses fewer rounds."""
    work_dir = work_dir.resolve()  # Flower's processes run in folders of their own
    payloads = paper_payloads()
    if quick:
        payloads.pop("full")
    rounds = 2 if quick else 3
    rows = [app_fixed_cost(work_dir / "app", sites=2, rounds=rounds + 2)]
    rows += loopback_payloads(work_dir / "loopback", payloads, rounds)
    skipped = namespaces_available()
    if not skipped:
        rows += link_payloads(work_dir / "links", payloads, rounds, UPLINKS_MBIT)
    return rows, {"payload_params": payloads, "links_skipped": skipped}


def main(quick: bool = False, work_dir: Path = Path("runs/bench/deploy")) -> Path:
    """Measure and publish as ``fedmed bench deploy`` does: JSON, figure, tables."""
    from fedmed.bench.plots import plot_deploy
    from fedmed.commands import apply_hermetic_env

    apply_hermetic_env()
    rows, detail = run_deploy(quick, work_dir.resolve())
    png = plot_deploy(rows, detail, RESULTS_DIR / "deploy.png")
    command = "fedmed bench deploy" + (" --quick" if quick else "")
    path = write_result(
        "deploy",
        rows,
        command,
        notes=deploy_notes(rows, detail),
        plots=[str(png.relative_to(REPO_ROOT))],
    )
    update_benchmarks_md()
    return path


if __name__ == "__main__":
    import sys

    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    main(quick="--quick" in sys.argv[1:])
