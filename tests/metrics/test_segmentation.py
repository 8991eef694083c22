"""Dice and HD95 wrappers against values computed by hand (BraTS empty-mask rules)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedmed.metrics.segmentation import dice, hd95

SHAPE = (10, 20, 30)


def _mask(*voxels: tuple[int, int, int], shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for voxel in voxels:
        mask[voxel] = True
    return mask


def test_dice_of_two_empty_masks_is_one():
    empty = _mask()
    assert dice(empty, empty) == 1.0


@pytest.mark.parametrize("empty_side", ["pred", "truth"])
def test_dice_with_exactly_one_empty_mask_is_zero(empty_side):
    # Prepare
    one = _mask((1, 1, 1), (1, 1, 2))
    pred, truth = (_mask(), one) if empty_side == "pred" else (one, _mask())
    # Execute / Assert
    assert dice(pred, truth) == 0.0


def test_dice_equals_twice_overlap_over_sizes():
    # Prepare: 4 predicted voxels, 6 reference voxels, 3 in common
    pred = _mask((0, 0, 0), (0, 0, 1), (0, 0, 2), (5, 5, 5))
    truth = _mask((0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 0, 3), (0, 0, 4), (0, 0, 5))
    # Execute / Assert: 2 * 3 / (4 + 6)
    assert dice(pred, truth) == pytest.approx(0.6)


def test_hd95_of_two_empty_masks_is_zero():
    empty = _mask()
    assert hd95(empty, empty, (1.0, 2.0, 0.5)) == 0.0


@pytest.mark.parametrize("empty_side", ["pred", "truth"])
def test_hd95_with_one_empty_mask_is_the_volume_diagonal_in_mm(empty_side):
    # Prepare: 10 x 20 x 30 voxels of 1 x 2 x 0.5 mm = 10 x 40 x 15 mm
    one = _mask((3, 3, 3))
    pred, truth = (_mask(), one) if empty_side == "pred" else (one, _mask())
    # Execute
    value = hd95(pred, truth, (1.0, 2.0, 0.5))
    # Assert
    assert value == pytest.approx(math.sqrt(10**2 + 40**2 + 15**2))


@pytest.mark.parametrize(
    ("offset", "spacing", "expected_mm"),
    [
        ((3, 0, 0), (1.0, 1.0, 1.0), 3.0),
        ((3, 0, 0), (2.0, 1.0, 1.0), 6.0),
        ((0, 4, 0), (1.0, 2.5, 1.0), 10.0),
        ((0, 0, 4), (1.0, 2.5, 0.5), 2.0),
        ((3, 4, 0), (1.0, 1.0, 7.0), 5.0),
    ],
)
def test_hd95_is_the_distance_in_mm_along_each_axis(offset, spacing, expected_mm):
    # Prepare: two single voxels `offset` apart
    pred = _mask((2, 2, 2))
    truth = _mask(tuple(2 + o for o in offset))
    # Execute / Assert: each axis scaled by its own voxel size
    assert hd95(pred, truth, spacing) == pytest.approx(expected_mm)


def test_hd95_ignores_the_farthest_five_percent_unlike_the_maximum():
    # Prepare: a 30-voxel line in both masks; the prediction adds voxels 9 mm
    # away. One stray voxel is 1 of 31 surface distances (under 5%), so the
    # 95th percentile stays 0 where the maximum (plain Hausdorff) would be 9;
    # three stray voxels are 3 of 33 (over 5%) and the 95th percentile is 9.
    line = [(4, 4, z) for z in range(30)]
    truth = _mask(*line)
    one_stray = _mask(*line, (4, 13, 0))
    three_stray = _mask(*line, (4, 13, 0), (4, 13, 1), (4, 13, 2))
    # Execute / Assert
    assert hd95(one_stray, truth) == pytest.approx(0.0)
    assert hd95(three_stray, truth) == pytest.approx(9.0)


def test_masks_without_spacing_use_1_mm_voxels():
    pred, truth = _mask((0, 0, 0)), _mask((0, 0, 7))
    assert hd95(pred, truth) == pytest.approx(7.0)
