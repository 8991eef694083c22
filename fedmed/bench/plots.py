"""PNG figures of the ``fedmed bench`` results (matplotlib, Agg backend).

One function per bench, each taking the contract rows (plus the bench's
detail where a curve is needed) and writing one PNG.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CODEC_COLOURS = {"fp32": "tab:blue", "fp16": "tab:orange", "int8": "tab:green"}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_comm(rows: list[dict], detail: dict[str, Any], path: Path) -> Path:
    """Bytes per round per site (log) for every task/mode/codec, and codec cost."""
    tiny = [r for r in rows if r["setting"] == "tiny"]
    labels = list(dict.fromkeys(f"{r['task']}/{r['mode']}" for r in tiny))
    fig, (bars, curves) = plt.subplots(
        1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 1]}
    )
    width = 0.27
    for i, codec in enumerate(CODEC_COLOURS):
        size = {
            f"{r['task']}/{r['mode']}": r["bytes_up_per_round"]
            for r in tiny
            if r["codec"] == codec
        }
        bars.bar(
            [x + (i - 1) * width for x in range(len(labels))],
            [size[label] for label in labels],
            width,
            label=codec,
            color=CODEC_COLOURS[codec],
        )
    bars.set_yscale("log")
    bars.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    bars.set_ylabel("bytes up per site per round (tiny configs)")
    bars.legend()
    for codec, history in detail.get("codec_curves", {}).items():
        curves.plot(
            range(1, len(history) + 1),
            [h["auc"] for h in history],
            marker="o",
            label=codec,
            color=CODEC_COLOURS.get(codec),
        )
    curves.set_xlabel("round")
    curves.set_ylabel("held-out AUC (classify LoRA)")
    curves.legend()
    return _save(fig, path)


def plot_secagg(rows: list[dict], detail: dict[str, Any], path: Path) -> Path:
    """Secure/plain time and byte ratios against the number of clients."""
    fig, (times, sizes) = plt.subplots(1, 2, figsize=(12, 4.5))
    series: dict[tuple[int, float], list[dict]] = defaultdict(list)
    for r in rows:
        series[(r["dim"], r["dropout_fraction"])].append(r)
    for (dim, drop), items in sorted(series.items()):
        items.sort(key=lambda r: r["clients"])
        label = f"d={dim:,}, drop {drop:.0%}"
        style = {0.0: "-", 0.1: "--", 0.3: ":"}.get(drop, "-.")
        clients = [r["clients"] for r in items]
        times.plot(
            clients, [r["time_ratio"] for r in items], style, marker="o", label=label
        )
        sizes.plot(
            clients, [r["bytes_ratio"] for r in items], style, marker="o", label=label
        )
    times.set_ylabel("secure / plain round time")
    sizes.set_ylabel("secure / plain round bytes")
    for ax in (times, sizes):
        ax.set_xlabel("clients")
        ax.set_yscale("log")
    times.legend(fontsize=7)
    return _save(fig, path)


def plot_dp(rows: list[dict], detail: dict[str, Any], path: Path) -> Path:
    """Utility (held-out AUC) against epsilon, and epsilon against noise."""
    fig, (utility, budget) = plt.subplots(1, 2, figsize=(12, 4.5))
    private = sorted(
        (r for r in rows if r["kind"] == "utility" and r["epsilon"]),
        key=lambda r: r["epsilon"],
    )
    utility.plot(
        [r["epsilon"] for r in private],
        [r["heldout_auc"] for r in private],
        marker="o",
        label="DP-FedAvg (fixed clipping)",
    )
    for r in private:
        utility.annotate(
            f"σ={r['noise_multiplier']}", (r["epsilon"], r["heldout_auc"]), fontsize=7
        )
    plain = [r for r in rows if r["kind"] == "utility" and not r["epsilon"]]
    if plain:
        utility.axhline(plain[0]["heldout_auc"], color="grey", ls="--", label="no DP")
    utility.set_xscale("log")
    utility.set_xlabel(f"epsilon (delta={private[0]['delta'] if private else ''})")
    utility.set_ylabel("held-out AUC")
    utility.legend()
    by_rate: dict[float, list[dict]] = defaultdict(list)
    for r in rows:
        if r["kind"] == "accountant":
            by_rate[r["sampling_rate"]].append(r)
    for rate, items in sorted(by_rate.items()):
        budget.plot(
            [r["noise_multiplier"] for r in items],
            [r["epsilon"] for r in items],
            marker="o",
            label=f"q={rate}, {items[0]['rounds']} rounds",
        )
    budget.set_yscale("log")
    budget.set_xlabel("noise multiplier σ")
    budget.set_ylabel("epsilon (RDP accountant)")
    budget.legend()
    return _save(fig, path)


def plot_scale(rows: list[dict], detail: dict[str, Any], path: Path) -> Path:
    """Round wall (simulation vs loop) and peak memory against the number of sites."""
    fig, (walls, memory) = plt.subplots(1, 2, figsize=(12, 4.5))
    sites = [r["sites"] for r in rows]
    walls.plot(
        sites, [r["sim_round_s"] for r in rows], marker="o", label="Flower simulation"
    )
    walls.plot(sites, [r["loop_round_s"] for r in rows], marker="s", label="plain loop")
    walls.set_xlabel("sites")
    walls.set_ylabel("wall per round (s)")
    walls.legend()
    memory.plot(
        sites,
        [r["peak_site_rss_mb"] for r in rows],
        marker="o",
        label="peak RSS of a site (actor)",
    )
    memory.plot(
        sites,
        [r["peak_total_rss_mb"] for r in rows],
        marker="s",
        label="peak RSS, whole simulation",
    )
    memory.plot(
        sites,
        [r["loop_peak_rss_mb"] for r in rows],
        marker="^",
        label="peak RSS, plain loop",
    )
    memory.set_xlabel("sites")
    memory.set_ylabel("MB")
    memory.legend()
    return _save(fig, path)


def plot_faults(rows: list[dict], detail: dict[str, Any], path: Path) -> Path:
    """One bar per scenario: green if it ended as specified, with its outcome."""
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.2))
    names = [r["scenario"] for r in rows]
    colours = ["tab:green" if r["survived"] else "tab:red" for r in rows]
    ax.barh(names, [1] * len(rows), color=colours)
    for i, r in enumerate(rows):
        ax.text(
            0.02,
            i,
            f"{r['outcome']} (round {r['round']}), "
            f"checkpoints lost: {r['checkpoints_lost']}",
            va="center",
            fontsize=8,
        )
    ax.set_xticks([])
    ax.invert_yaxis()
    ax.set_title("fault scenarios: green = survived as specified, nothing lost")
    return _save(fig, path)


def plot_deploy(rows: list[dict], detail: dict[str, Any], path: Path) -> Path:
    """Per link and mode, one round split into wire time and fixed cost per site."""
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    labels = [
        f"{r['uplink_mbit']} Mbit/s · {r['mode']}"
        if r["uplink_mbit"]
        else f"{r['link']} · {r['mode']}"
        for r in rows
    ]
    wire = [r.get("wire_s", 0.0) for r in rows]
    # the app row's round also holds the training a simulated round does
    work = [r.get("simulated_round_s", 0.0) for r in rows]
    fixed = [max(r["fixed_cost_s_per_site"], 0.0) for r in rows]
    ax.barh(labels, wire, color="tab:blue", label="wire time (bytes at link rate)")
    if any(work):
        ax.barh(
            labels, work, color="tab:green", label="the app's work (simulated round)"
        )
    start = [w + a for w, a in zip(wire, work, strict=True)]
    ax.barh(labels, fixed, left=start, color="tab:orange", label="fixed cost per site")
    for i, r in enumerate(rows):
        ax.text(start[i] + fixed[i], i, f" {r['round_s']} s", va="center", fontsize=8)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("seconds per round (symlog)")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("a deployed round: wire time vs fixed cost")
    return _save(fig, path)
