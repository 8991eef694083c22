"""Box prompts from masks and their mapping into SAM's input frame.

SAMBA Sec. 2.2 prompts SAM with a bounding box around the tumour (or, as the
weaker baseline, around the whole brain). As in the authors' code and MedSAM,
the tumour box is the mask's extent with each side pushed outward by an
independent random 0..19 px (``jitter=20``), re-drawn every time a sample is
drawn, so it doubles as augmentation. Boxes are XYXY in pixel indices of the
original slice (x = column, y = row), then mapped by the same
``ResizeLongestSide`` as the image (:func:`to_input_frame`), so box and image
agree for non-square x/y views too.
"""

from __future__ import annotations

import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide
from torch import Tensor
from torch.nn import functional as F


def mask_extent(mask: np.ndarray) -> np.ndarray | None:
    """Tight box ``[x_min, y_min, x_max, y_max]`` (inclusive pixel indices), or None."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float64)


def jittered_box(
    mask: np.ndarray, jitter: int, rng: np.random.Generator
) -> np.ndarray | None:
    """Mask extent with each side moved outward by ``rng.integers(0, jitter)`` px.

    Clamped to the slice (``[0, W-1]`` x ``[0, H-1]``). ``jitter=0`` gives the
    tight box; an empty mask gives None (no prompt: the slice is predicted empty).
    """
    box = mask_extent(mask)
    if box is None:
        return None
    shift = rng.integers(0, jitter, size=4) if jitter > 0 else np.zeros(4, int)
    height, width = mask.shape
    return np.array(
        [
            max(box[0] - shift[0], 0),
            max(box[1] - shift[1], 0),
            min(box[2] + shift[2], width - 1),
            min(box[3] + shift[3], height - 1),
        ],
        dtype=np.float64,
    )


def input_size(original_size: tuple[int, int], target_length: int) -> tuple[int, int]:
    """(H, W) of a slice after ResizeLongestSide to ``target_length``, unpadded."""
    return ResizeLongestSide.get_preprocess_shape(*original_size, target_length)


def to_input_frame(
    boxes: np.ndarray, original_size: tuple[int, int], target_length: int
) -> np.ndarray:
    """Map ``(B, 4)`` boxes from slice pixels into SAM's padded input frame."""
    transform = ResizeLongestSide(target_length)
    return transform.apply_boxes(np.asarray(boxes, dtype=np.float64), original_size)


def to_low_res_frame(labels: np.ndarray, low_res: int) -> Tensor:
    """A slice's label map in the decoder's low-res frame (nearest, padded with 0).

    The decoder's ``low_res x low_res`` logits cover SAM's padded square
    input, so the target is resized by the longest side and zero-padded at the
    bottom/right exactly like the image.
    """
    height, width = input_size(labels.shape, low_res)
    source = torch.from_numpy(labels.astype(np.float32))[None, None]
    resized = F.interpolate(source, size=(height, width), mode="nearest-exact")
    return F.pad(resized[0, 0], (0, low_res - width, 0, low_res - height))


def decoder_target(labels: np.ndarray, low_res: int, channels: int) -> Tensor:
    """Dice target: whole tumour (1 channel) or NETC / SNFH / ET one-vs-rest (3)."""
    frame = to_low_res_frame(labels, low_res)
    if channels == 1:
        return (frame > 0).float()[None]
    return torch.stack([(frame == label).float() for label in (1, 2, 3)])
