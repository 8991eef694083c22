"""Overlay figures of SAMBA's predictions on MRI slices (like the paper's Fig. 4).

One PNG per case: the FLAIR slice with the most tumour along the chosen view,
once with the reference regions and once per evaluated stage (zero-shot,
fine-tuned, YOLO boxes). Drawn with matplotlib's object API, so no GUI
backend is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fedmed.data.brats import BratsVolume, region_masks
from fedmed.tasks.samba.data import VIEW_AXIS, normalise_slice, take_slice

REGION_COLOURS = {"wt": (0.1, 0.8, 0.2), "tc": (1.0, 0.8, 0.0), "et": (0.9, 0.1, 0.1)}


def best_slice(labels: np.ndarray, view: str) -> int:
    """Index of the slice with the most tumour along ``view``."""
    axes = tuple(a for a in range(3) if a != VIEW_AXIS[view])
    return int(np.argmax((labels > 0).sum(axis=axes)))


def _overlay(base: np.ndarray, regions: dict[str, np.ndarray]) -> np.ndarray:
    """RGB image: grey slice with WT, TC, ET painted half-transparent in that order."""
    rgb = np.repeat(base[:, :, None] / 255.0, 3, axis=2)
    for name in ("wt", "tc", "et"):
        if name in regions:
            mask = regions[name]
            rgb[mask] = 0.5 * rgb[mask] + 0.5 * np.asarray(REGION_COLOURS[name])
    return rgb


def write_overlay(
    volume: BratsVolume,
    predictions: dict[str, dict[str, np.ndarray]],
    folder: str | Path,
    view: str = "z",
) -> Path:
    """Write ``samba_overlay_<case>.png`` into ``folder``; returns its path."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    index = best_slice(volume.labels, view)
    base = normalise_slice(take_slice(volume.images["flair"], view, index))
    panels = {"reference": region_masks(volume.labels), **predictions}
    figure = Figure(figsize=(3 * len(panels), 3.2))
    FigureCanvasAgg(figure)
    for column, (title, regions) in enumerate(panels.items()):
        axis = figure.add_subplot(1, len(panels), column + 1)
        sliced = {k: take_slice(v, view, index) for k, v in regions.items()}
        axis.imshow(_overlay(base, sliced), interpolation="nearest")
        axis.set_title(title.replace("_", " "), fontsize=9)
        axis.axis("off")
    figure.suptitle(f"{volume.case_id} ({view}={index}; WT green, TC yellow, ET red)")
    figure.tight_layout()
    path = out / f"samba_overlay_{volume.case_id}.png"
    figure.savefig(path, dpi=100)
    return path
