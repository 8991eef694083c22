"""Slices and box prompts: extents, jitter bounds, non-square views, empty slices."""

from __future__ import annotations

import numpy as np
from segment_anything.utils.transforms import ResizeLongestSide

from fedmed.data.brats import BratsVolume
from fedmed.tasks.samba.data import normalise_slice, prompted_indices
from fedmed.tasks.samba.prompts import (
    decoder_target,
    jittered_box,
    mask_extent,
    to_input_frame,
)


def _mask(shape=(48, 32), rows=(10, 29), cols=(5, 20)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    mask[rows[0], cols[0]] = False  # not a perfect rectangle
    return mask


def test_box_equals_mask_extent_without_jitter():
    # Prepare
    mask = _mask()
    # Execute
    box = jittered_box(mask, 0, np.random.default_rng(0))
    # Assert: XYXY = (col min, row min, col max, row max)
    np.testing.assert_array_equal(box, [5, 10, 20, 29])
    np.testing.assert_array_equal(mask_extent(mask), [5, 10, 20, 29])


def test_jitter_pushes_each_side_outward_by_0_to_19_and_is_redrawn():
    # Prepare
    mask = np.zeros((240, 155), dtype=bool)
    mask[100:120, 60:90] = True
    rng = np.random.default_rng(0)
    # Execute
    boxes = np.stack([jittered_box(mask, 20, rng) for _ in range(400)])
    # Assert
    tight = np.array([60, 100, 89, 119])
    outward = np.abs(boxes - tight)
    assert (boxes[:, :2] <= tight[:2]).all() and (boxes[:, 2:] >= tight[2:]).all()
    assert outward.min() == 0 and outward.max() == 19
    assert len({tuple(b) for b in boxes}) > 300


def test_jittered_box_stays_inside_the_slice():
    # Prepare
    mask = np.zeros((40, 30), dtype=bool)
    mask[0:5, 25:30] = True
    rng = np.random.default_rng(1)
    # Execute
    boxes = np.stack([jittered_box(mask, 20, rng) for _ in range(100)])
    # Assert
    assert boxes[:, [0, 1]].min() >= 0
    assert boxes[:, 2].max() <= 29 and boxes[:, 3].max() <= 39


def test_box_matches_image_after_resizing_a_non_square_view():
    # Prepare: a 48 x 32 slice (an x/y view of a 48x48x32 volume)
    mask = _mask()
    size = 64
    # Execute: the image path (ResizeLongestSide on the pixels) and the box path
    resized = ResizeLongestSide(size).apply_image(
        np.repeat((mask * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    )
    image_extent = mask_extent(resized[:, :, 0] > 127)
    box = to_input_frame(mask_extent(mask)[None], mask.shape, size)[0]
    # Assert: same place within one resized pixel (scale 64/48)
    scale = size / 48
    assert np.abs(box - image_extent).max() <= scale + 1e-6
    # the authors' pipeline stretched the image to a square but scaled the box by
    # the longest side: there the tumour's x range and the box's disagree
    stretched_x = mask_extent(mask)[[0, 2]] * size / mask.shape[1]
    assert np.abs(stretched_x - box[[0, 2]]).max() > 3


def test_low_res_target_lies_where_the_box_points():
    # Prepare
    mask = _mask()
    labels = mask.astype(np.uint8) * 2
    low_res = 64
    # Execute
    target = decoder_target(labels, low_res, channels=1)[0].numpy()
    box = to_input_frame(mask_extent(mask)[None], mask.shape, low_res)[0]
    # Assert
    assert target.shape == (low_res, low_res)
    assert np.abs(mask_extent(target > 0) - box).max() <= low_res / 48 + 1e-6
    assert not target[:, 43:].any()  # padded right part of a 48x32 slice


def test_multiclass_target_is_one_vs_rest_per_label():
    # Prepare
    labels = np.zeros((16, 16), dtype=np.uint8)
    labels[2:6, 2:6], labels[8:12, 8:12], labels[12:14, 2:4] = 1, 2, 3
    # Execute
    target = decoder_target(labels, 16, channels=3).numpy()
    # Assert
    for channel, label in enumerate((1, 2, 3)):
        np.testing.assert_array_equal(target[channel], labels == label)


def test_slice_normalisation_keeps_background_and_clips():
    # Prepare
    raw = np.zeros((32, 32), dtype=np.float32)
    raw[8:24, 8:24] = np.linspace(100, 200, 256).reshape(16, 16)
    raw[10, 10] = 1e6  # a hot pixel above the 99.5th percentile
    # Execute
    image = normalise_slice(raw)
    # Assert
    assert image.dtype == np.uint8
    assert (image[raw == 0] == 0).all()
    assert image.max() == 255 and image[10, 10] == 255
    assert image[20, 20] > 100  # the hot pixel did not squash the rest to ~0


def test_empty_slices_get_no_box_and_no_prompt():
    # Prepare
    labels = np.zeros((8, 8, 6), dtype=np.uint8)
    labels[2:4, 2:4, 1:3] = 2
    images = {m: np.ones((8, 8, 6), np.float32) for m in ("t1", "t1ce", "t2", "flair")}
    volume = BratsVolume("case", images, labels, (1.0, 1.0, 1.0))
    # Execute / Assert
    assert jittered_box(np.zeros((8, 8), bool), 20, np.random.default_rng(0)) is None
    assert prompted_indices(volume, "z", "tumour") == [1, 2]
    assert prompted_indices(volume, "x", "tumour") == [2, 3]
    assert prompted_indices(volume, "z", "brain") == [0, 1, 2, 3, 4, 5]
