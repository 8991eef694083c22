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
from matplotlib.lines import Line2D  # noqa: E402
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


MAX_METRICS_PER_PANEL = 3
"""A family with more metrics (SAMBA's Dice per region) gets a panel per metric."""


def _panels(bold: Series, per_site: dict[str, Series]) -> list[tuple[str, list[str]]]:
    """``(title, metric names)`` of each panel, family by family."""
    families: dict[str, set[str]] = defaultdict(set)
    for _, key in bold:
        families[metric_family(key)].add(key)
    for family, series in per_site.items():
        families[family].update(key for _, key in series)
    panels = []
    for family in sorted(families):
        names = sorted(families[family])
        if len(names) <= MAX_METRICS_PER_PANEL:
            panels.append((family, names))
        else:
            panels.extend((f"{family}: {name}", [name]) for name in names)
    return panels


def metrics_figure(records: list[dict], *, synthetic: bool = False) -> Figure | None:
    """One panel per metric family; ``None`` when no row holds a metric."""
    bold, per_site = _collect(records)
    panels = _panels(bold, per_site)
    if not panels:
        return None
    rows, cols = _grid(len(panels))
    fig = Figure(figsize=(4.6 * cols, 3.3 * rows + 1.2))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (title, names) in zip(axes, panels, strict=False):
        _draw_panel(ax, names, bold, per_site[metric_family(names[0])])
        ax.set(title=title, xlabel="round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    headline = _headline(fig, records, synthetic)
    fig.tight_layout(rect=(0, 0, 1, 0.96 if headline else 1))
    _figure_legend(fig, axes[: len(panels)])
    return fig


def _draw_panel(ax, names: list[str], bold: Series, sites: Series) -> None:
    """Sites faint, then each setting bold; metrics of the panel by line style."""
    for (site, key), (xs, ys) in sorted(sites.items()):
        if key in names:
            ax.plot(
                xs, ys, color="0.55", alpha=0.35, linewidth=0.8, label=f"site {site}"
            )
    for (phase, key), (xs, ys) in sorted(bold.items()):
        if key not in names:
            continue
        ax.plot(
            xs,
            ys,
            linestyle=DASHES[names.index(key) % len(DASHES)],
            linewidth=2,
            markersize=4,
            label=SETTINGS[phase],
            **STYLE[phase],
        )
    if len(names) > 1:  # which line style is which metric, inside the panel
        styles = [
            Line2D([], [], color="black", linestyle=DASHES[i % len(DASHES)], label=n)
            for i, n in enumerate(names)
        ]
        ax.legend(handles=styles, fontsize=7, loc="best", framealpha=0.7)


def _figure_legend(fig: Figure, axes) -> None:
    """One legend under the panels: each setting once, every site as one entry."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            label = "each site" if label.startswith("site ") else label
            entries.setdefault(label, handle)
    columns = min(5, len(entries))
    fig.legend(
        list(entries.values()),
        list(entries),
        loc="lower center",
        ncol=columns,
        fontsize=8,
        frameon=False,
    )
    lines = math.ceil(len(entries) / columns)
    fig.subplots_adjust(bottom=(0.55 + 0.22 * lines) / fig.get_figheight())


def _headline(fig: Figure, records: list[dict], synthetic: bool) -> bool:
    trained = rounds_trained(records)
    notes = []
    if trained == 0:
        notes.append("NO ROUND COMPLETED: these are the untrained model's scores")
    if synthetic:
        notes.append("synthetic data")
    if notes:
        color = "red" if trained == 0 else "darkorange"
        fig.suptitle("  |  ".join(notes), color=color, fontweight="bold")
    return bool(notes)


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
