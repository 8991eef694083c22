"""The run's figures: metrics per family and communication per phase and direction.

A reader compares settings, not series: each metric family (AUC, accuracy,
loss, Dice, HD95, rank, ...) gets its own panel in which the federated model
(scored on the held-out set and on the sites' test sets), the local-only
mean and the pooled model are drawn bold and each site's own evaluation
faint. Communication is drawn per round, split by phase and direction,
because evaluation traffic can outweigh the adapter itself. A run that
trained nothing says so in red above its panels.

Reads only ``metrics.jsonl`` rows (the run-directory contract).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

FAMILIES = (
    ("hd95", "HD95"),
    ("dice", "Dice"),
    ("auc", "AUC"),
    ("acc", "accuracy"),
    ("loss", "loss"),
    ("rank", "rank"),
    ("fid", "FID"),
    ("ssim", "SSIM"),
    ("psnr", "PSNR"),
)
"""Substring of a metric name -> its panel, first match wins (``dice_et``: Dice)."""

SETTINGS = {
    "heldout": "federated (held-out)",
    "evaluate": "federated (site tests)",
    "local": "local-only (mean of sites)",
    "pooled": "pooled",
}
STYLE = {
    "heldout": {"color": "tab:blue", "marker": "o"},
    "evaluate": {"color": "tab:cyan", "marker": "s"},
    "local": {"color": "tab:orange", "marker": "^"},
    "pooled": {"color": "tab:green", "marker": "D"},
}
DASHES = ("-", "--", ":", "-.")
"""Metrics of one family drawn by one setting differ by line style."""
SKIPPED = {"num-examples", "site-id", "bytes_up", "bytes_down", "steps", "wall_s"}
BASELINE_PHASES = ("local", "pooled")


def metric_family(name: str) -> str:
    """The panel a metric is drawn in."""
    lowered = name.lower()
    for needle, family in FAMILIES:
        if needle in lowered:
            return family
    return name


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


Series = dict[tuple[str, str], tuple[list[int], list[float]]]


def _collect(records: Iterable[dict]) -> tuple[Series, dict[str, Series]]:
    """Bold series (phase, metric) and faint per-site series of each family."""
    bold: Series = {}
    per_site: dict[str, Series] = defaultdict(dict)
    for r in records:
        phase = r.get("phase")
        if phase not in SETTINGS:
            continue
        for key, value in r.get("aggregated", {}).items():
            if key not in SKIPPED and (y := _number(value)) is not None:
                xs, ys = bold.setdefault((phase, key), ([], []))
                xs.append(r["round"])
                ys.append(y)
        if phase != "evaluate":
            continue
        for site, metrics in r.get("sites", {}).items():
            for key, value in metrics.items():
                if key not in SKIPPED and (y := _number(value)) is not None:
                    family = per_site[metric_family(key)]
                    xs, ys = family.setdefault((site, key), ([], []))
                    xs.append(r["round"])
                    ys.append(y)
    return bold, per_site


def rounds_trained(records: Iterable[dict]) -> int:
    """Training rounds that completed (``train`` rows with status ok)."""
    return len(
        {
            r["round"]
            for r in records
            if r.get("phase") == "train" and r.get("status", "ok") == "ok"
        }
    )


def _grid(count: int) -> tuple[int, int]:
    cols = min(3, count)
    return math.ceil(count / cols), cols


def metrics_figure(records: list[dict], *, synthetic: bool = False) -> Figure | None:
    """One panel per metric family; ``None`` when no row holds a metric."""
    bold, per_site = _collect(records)
    families = sorted({metric_family(k) for _, k in bold} | set(per_site))
    if not families:
        return None
    rows, cols = _grid(len(families))
    fig = Figure(figsize=(4.6 * cols, 3.9 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, family in zip(axes, families, strict=False):
        names = sorted({k for _, k in bold if metric_family(k) == family})
        for (site, key), (xs, ys) in sorted(per_site.get(family, {}).items()):
            label = f"site {site}" + (f": {key}" if len(names) > 1 else "")
            ax.plot(xs, ys, color="0.55", alpha=0.35, linewidth=0.8, label=label)
        for (phase, key), (xs, ys) in sorted(bold.items()):
            if metric_family(key) != family:
                continue
            label = SETTINGS[phase] + (f": {key}" if len(names) > 1 else "")
            dash = DASHES[names.index(key) % len(DASHES)]
            ax.plot(
                xs,
                ys,
                linestyle=dash,
                linewidth=2,
                markersize=4,
                label=label,
                **STYLE[phase],
            )
        ax.set(title=family, xlabel="round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        _legend_below(ax)
    for ax in axes[len(families) :]:
        ax.set_visible(False)
    _headline(fig, records, synthetic)
    fig.tight_layout()
    return fig


def _legend_below(ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    faint = [i for i, label in enumerate(labels) if label.startswith("site ")]
    if len(faint) > 1:  # one legend entry stands for every site's faint line
        keep = [i for i in range(len(labels)) if i not in faint[1:]]
        handles = [handles[i] for i in keep]
        labels = [labels[i] if i != faint[0] else "each site" for i in keep]
    ax.legend(
        handles,
        labels,
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        ncol=2,
        frameon=False,
    )


def _headline(fig: Figure, records: list[dict], synthetic: bool) -> None:
    trained = rounds_trained(records)
    notes = []
    if trained == 0:
        notes.append("NO ROUND COMPLETED: these are the untrained model's scores")
    if synthetic:
        notes.append("synthetic data")
    if notes:
        color = "red" if trained == 0 else "darkorange"
        fig.suptitle("  |  ".join(notes), color=color, fontweight="bold")


def communication_figure(records: list[dict]) -> Figure | None:
    """MB per round split by phase and direction, and the cumulative total."""
    per_round: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for r in records:
        if r.get("phase") in BASELINE_PHASES:
            continue
        for direction in ("up", "down"):
            mb = r.get(f"bytes_{direction}", 0) / 1e6
            if mb > 0:
                key = (r["phase"], direction)
                per_round[key][r["round"]] = per_round[key].get(r["round"], 0) + mb
    if not per_round:
        return None
    rounds = sorted({k for series in per_round.values() for k in series})
    fig = Figure(figsize=(11, 4))
    bars, total = fig.subplots(1, 2)
    bottom = [0.0] * len(rounds)
    for phase, direction in sorted(per_round):
        values = [per_round[(phase, direction)].get(k, 0.0) for k in rounds]
        hatch = "//" if direction == "down" else None
        label = f"{phase} {'site→server' if direction == 'up' else 'server→site'}"
        bars.bar(rounds, values, bottom=bottom, hatch=hatch, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    bars.set(xlabel="round", ylabel="MB per round", title="Traffic per round")
    bars.xaxis.set_major_locator(MaxNLocator(integer=True))
    total.xaxis.set_major_locator(MaxNLocator(integer=True))
    bars.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    cumulative, running = [], 0.0
    for height in bottom:
        running += height
        cumulative.append(running)
    total.plot(rounds, cumulative, marker="o")
    total.set(xlabel="round", ylabel="cumulative MB (up + down)", title="Total")
    total.set_ylim(bottom=0)
    for ax in (bars, total):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
