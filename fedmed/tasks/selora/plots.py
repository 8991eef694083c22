"""SeLoRA figures and tables: final rank per layer, trainable-parameter shares.

The heatmap follows the SeLoRA paper's Fig. 3: one panel per component
(text encoder, U-Net), rows are the adapted weight kinds (q, k, v, ...),
columns the block index in forward order, colour the final rank.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

HEATMAP_NAME = "selora_ranks.png"
# block = the path up to the attention / feed-forward / resnet sub-module
_KIND = re.compile(
    r"^(?P<block>.*?)\.(?P<kind>(attn\d|self_attn|mlp|ff\.net\.0)\.\w+|\w*proj\w*|fc\d)$"
)


def split_layer_name(name: str) -> tuple[str, str, str]:
    """(component, block path, weight kind) of an adapted layer's name."""
    component, _, rest = name.partition(".")
    match = _KIND.match(rest)
    if not match:
        block, _, kind = rest.rpartition(".")
        return component, block, kind
    return component, match["block"], match["kind"]


def rank_grid(
    ranks: Mapping[str, int], component: str
) -> tuple[list[str], list[str], np.ndarray]:
    """(row kinds, column blocks, ranks with NaN where a block lacks that kind)."""
    kinds: list[str] = []
    blocks: list[str] = []
    cells = {}
    for name, rank in ranks.items():
        comp, block, kind = split_layer_name(name)
        if comp != component:
            continue
        if kind not in kinds:
            kinds.append(kind)
        if block not in blocks:
            blocks.append(block)
        cells[(kind, block)] = rank
    grid = np.full((len(kinds), len(blocks)), np.nan)
    for (kind, block), rank in cells.items():
        grid[kinds.index(kind), blocks.index(block)] = rank
    return kinds, blocks, grid


def plot_rank_heatmap(
    ranks: Mapping[str, int],
    folder: str | Path,
    title: str = "SeLoRA final rank per layer",
) -> Path:
    """Write ``selora_ranks.png`` (one panel per component) into ``folder``."""
    components = list(dict.fromkeys(name.partition(".")[0] for name in ranks))
    if not components:
        raise ValueError("no layer ranks to plot")
    fig = Figure(figsize=(10, 2.2 + 1.8 * len(components)))
    axes = fig.subplots(len(components), 1, squeeze=False)
    top = max(ranks.values())
    for ax, component in zip(axes[:, 0], components, strict=True):
        kinds, blocks, grid = rank_grid(ranks, component)
        image = ax.imshow(
            np.ma.masked_invalid(grid),
            aspect="auto",
            cmap="viridis",
            vmin=1,
            vmax=max(top, 2),
        )
        ax.set_yticks(range(len(kinds)), kinds, fontsize=7)
        ax.set_xticks(
            range(len(blocks)), [str(i) for i in range(len(blocks))], fontsize=7
        )
        ax.set_xlabel("block index (forward order)")
        ax.set_title(component.replace("_", " "), fontsize=9)
        bar = fig.colorbar(image, ax=ax, label="rank")
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(folder) / HEATMAP_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def trainable_table(rows: Sequence[Mapping[str, object]]) -> str:
    """Markdown table of trainable parameters and % per method (benchmark rows)."""
    lines = [
        "| method | trainable params | trainable % | bytes per round |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {int(row['trainable_params']):,} | "
            f"{float(row['trainable_pct']):.3f} | {int(row['bytes_per_round']):,} |"
        )
    return "\n".join(lines)
