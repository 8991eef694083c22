"""Synthetic high-resolution data: real format, site shift, fine-detail labels."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedmed.data.image_folder import LabelsLayout, read_image_folder
from fedmed.data.synth_highres import (
    SiteShift,
    draw_scene,
    paint,
    write_synthetic_highres,
)


def _as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0


@pytest.mark.parametrize(("high", "low"), [(512, 224), (128, 32)])
def test_label_detail_is_visible_at_high_and_erased_at_low_resolution(high, low):
    # Prepare: the same scene painted with positive and negative lesions
    scene = draw_scene(np.random.default_rng(0), high, SiteShift())
    positive, negative = paint(scene, True), paint(scene, False)
    # Execute
    high_diff = (_as_tensor(positive) - _as_tensor(negative)).abs()
    low_diff = (
        F.interpolate(
            _as_tensor(positive), size=(low, low), antialias=True, mode="bilinear"
        )
        - F.interpolate(
            _as_tensor(negative), size=(low, low), antialias=True, mode="bilinear"
        )
    ).abs()
    # Assert: lesion pixels differ by ~0.2 at high res, < 0.02 after down-sampling
    assert high_diff.max() > 0.15
    assert low_diff.max() < 0.1 * high_diff.max()


def test_writes_sites_and_heldout_in_the_image_folder_format(tmp_path):
    # Execute
    write_synthetic_highres(
        tmp_path, 3, seed=0, size=64, images_per_site=40, heldout_images=10
    )
    # Assert
    sites = [
        read_image_folder(tmp_path / f"site_{k}", LabelsLayout()) for k in range(3)
    ]
    heldout = read_image_folder(tmp_path / "heldout", LabelsLayout())
    assert [len(s) for s in sites] == [40, 40, 40] and len(heldout) == 10
    assert {r.split for r in heldout} == {"test"}
    assert [sum(r.split == "train" for r in s) for s in sites] == [28, 28, 28]
    with (tmp_path / "site_0" / "labels.csv").open() as handle:
        assert next(csv.reader(handle)) == ["image", "label", "split"]
    first = np.asarray(
        __import__("PIL.Image", fromlist=["Image"]).open(sites[0][0].path)
    )
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8


def test_sites_differ_in_positive_rate():
    # The site positive rates spread around 0.5 (label skew), held-out stays at 0.5
    from fedmed.data.synth_highres import site_shift

    rng = np.random.default_rng(0)
    rates = [site_shift(k, 3, rng).positive_rate for k in range(3)]
    assert rates == pytest.approx([0.35, 0.5, 0.65])
