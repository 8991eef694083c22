"""Segmentation metrics (monai Dice, HD95) with BraTS conventions for empty masks.

monai leaves the empty cases undefined (NaN / inf). The BraTS evaluation
convention is used instead: both masks empty -> Dice 1 and HD95 0; exactly
one empty -> Dice 0 and HD95 equal to the volume's diagonal in mm (the worst
possible distance), so every case contributes a finite number and a mean over
cases stays a mean over cases when sites are averaged by case count.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance


def _as_batch(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks (monai), 1.0 when both are empty."""
    value = compute_dice(_as_batch(pred), _as_batch(truth), ignore_empty=False)
    return float(value.item())


def hd95(
    pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None
) -> float:
    """95th-percentile Hausdorff distance in mm (monai); BraTS values if empty."""
    spacing = tuple(spacing) if spacing is not None else (1.0,) * pred.ndim
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not has_pred and not has_truth:
        return 0.0
    if has_pred != has_truth:
        extent = np.asarray(pred.shape, dtype=float) * np.asarray(spacing, dtype=float)
        return float(np.linalg.norm(extent))
    with warnings.catch_warnings():  # monai's own deprecated-argument notice
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(
            _as_batch(pred),
            _as_batch(truth),
            include_background=True,
            percentile=95,
            spacing=list(spacing),
        )
    return float(value.item())
