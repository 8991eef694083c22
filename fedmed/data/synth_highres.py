"""Synthetic high-resolution fundus-like images whose label lives in fine detail.

Every image shows a circular field of view with smooth illumination, a few
large soft blots (clutter shared by both classes) and 4-8 small lesions. The
label is the lesions' fine structure: positive lesions are stippled (a
one-pixel checkerboard of bright dots, like clusters of microaneurysms),
negative lesions are uniform with the same mean intensity. The lesion masks
are built from 2×2 pixel blocks, so any area-averaging down-sampling by 2 or
more maps both kinds of lesion to the same values: at low resolution (224 px
from 512, 32 px from 128) the classes are (nearly) indistinguishable, while the
high-resolution image separates them. This is the property FPT relies on
(a frozen model on 512 px sees what a 224-px network cannot).

Output, in the image-folder + labels-CSV format read by
:mod:`fedmed.data.image_folder`: ``out/site_<k>/images/*.png`` with
``out/site_<k>/labels.csv`` (``image,label,split``, 70/10/20 split) and
``out/heldout/`` (all ``test``). Sites differ in brightness, contrast, tint,
noise and positive rate (label skew).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fedmed.data.image_folder import PAPER_SPLIT, SPLITS, split_cuts
from fedmed.data.sites import HELDOUT_DIR, site_dir

LESION_TINT = np.array([1.0, 0.9, 0.55])
LESION_GAIN = 0.45
BACKGROUND_CEILING = 1.0 - LESION_GAIN


@dataclass(frozen=True)
class SiteShift:
    """Acquisition differences of one site (scanner, protocol, population)."""

    brightness: float = 1.0
    contrast: float = 1.0
    tint: tuple[float, float, float] = (0.62, 0.3, 0.16)
    noise: float = 0.015
    positive_rate: float = 0.5


@dataclass
class Scene:
    """Everything of an image except the lesion texture that carries the label."""

    background: np.ndarray  # (S, S, 3) float
    lesions: np.ndarray  # (S, S) bool, union of 2x2-block lesion masks


def draw_scene(rng: np.random.Generator, size: int, shift: SiteShift) -> Scene:
    """Field of view, illumination, clutter blots, noise and lesion masks.

    Position, illumination, clutter, gain and tint vary from image to image
    (as in real fundus photographs), so that the classes differ only in the
    lesion texture while the images themselves differ in much else.
    """
    yy, xx = np.mgrid[0:size, 0:size] / size
    cy, cx = 0.5 + rng.uniform(-0.04, 0.04, 2)
    fov = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(0.42, 0.48) ** 2
    light = _smooth_field(rng, size, cells=4, low=0.45, high=1.0)
    for _ in range(rng.integers(2, 7)):
        by, bx = rng.uniform(0.2, 0.8, 2)
        width = rng.uniform(0.002, 0.02)
        light += rng.uniform(-0.25, 0.15) * np.exp(
            -((yy - by) ** 2 + (xx - bx) ** 2) / width
        )
    level = 0.5 + shift.contrast * rng.uniform(0.8, 1.2) * (light - 0.5)
    tint = np.asarray(shift.tint) * rng.uniform(0.85, 1.15, 3)
    gain = shift.brightness * rng.uniform(0.8, 1.2)
    background = gain * level[..., None] * tint
    background += rng.normal(0.0, shift.noise, background.shape)
    # compress into [0, ceiling) so that lesions never clip: clipping would break
    # the equal block means of stippled and uniform lesions
    background = BACKGROUND_CEILING * np.tanh(
        np.clip(background, 0.0, None) / BACKGROUND_CEILING
    )
    background *= fov[..., None]
    return Scene(background, _lesion_masks(rng, size, fov))


def _smooth_field(
    rng: np.random.Generator, size: int, cells: int, low: float, high: float
) -> np.ndarray:
    """A smooth random field: a ``cells``² random grid resized bicubically."""
    grid = rng.uniform(low, high, (cells, cells)).astype(np.float32)
    field = Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC)
    return np.asarray(field, dtype=np.float64)


def _lesion_masks(rng: np.random.Generator, size: int, fov: np.ndarray) -> np.ndarray:
    half = size // 2
    radius = max(1.0, half / 32)
    yy, xx = np.mgrid[0:half, 0:half]
    blocks = np.zeros((half, half), dtype=bool)
    for _ in range(rng.integers(12, 25)):
        cy, cx = rng.uniform(0.25, 0.75, 2) * half
        blocks |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    return np.kron(blocks, np.ones((2, 2), dtype=bool))[:size, :size] & fov


def paint(scene: Scene, stippled: bool) -> np.ndarray:
    """The uint8 image: stippled (positive) or uniform (negative) lesions."""
    size = scene.lesions.shape[0]
    if stippled:
        parity = np.add.outer(np.arange(size), np.arange(size)) % 2
        texture = LESION_GAIN * (parity == 0)
    else:
        texture = np.full((size, size), LESION_GAIN / 2)
    image = scene.background + (scene.lesions * texture)[..., None] * LESION_TINT
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


def site_shift(site: int, num_sites: int, rng: np.random.Generator) -> SiteShift:
    """Per-site acquisition shift and label skew (positive rate 0.3-0.7)."""
    spread = (site - (num_sites - 1) / 2) / max(1.0, (num_sites - 1) / 2)
    tint = (0.62 + rng.uniform(-0.05, 0.05), 0.3 + rng.uniform(-0.05, 0.05), 0.16)
    return SiteShift(
        brightness=float(rng.uniform(0.85, 1.1)),
        contrast=float(rng.uniform(0.8, 1.2)),
        tint=tint,
        noise=float(rng.uniform(0.01, 0.02)),
        positive_rate=0.5 + 0.15 * spread,
    )


def write_split_folder(
    folder: Path,
    count: int,
    size: int,
    shift: SiteShift,
    rng: np.random.Generator,
    split_fractions: tuple[float, ...] | None = PAPER_SPLIT,
) -> None:
    """Write ``count`` images and ``labels.csv``; no fractions = all ``test``."""
    images = Path(folder) / "images"
    images.mkdir(parents=True, exist_ok=True)
    labels = (rng.random(count) < shift.positive_rate).astype(int)
    splits = ["test"] * count
    if split_fractions is not None:
        cuts = split_cuts(count, split_fractions)
        splits = [
            SPLITS[int(np.searchsorted(cuts, i, side="right"))] for i in range(count)
        ]
    rows = []
    for index, (label, split) in enumerate(zip(labels, splits, strict=True)):
        name = f"img_{index:05d}.png"
        image = paint(draw_scene(rng, size, shift), stippled=bool(label))
        Image.fromarray(image).save(images / name)
        rows.append((name, int(label), split))
    with (Path(folder) / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("image", "label", "split"))
        writer.writerows(rows)


def write_synthetic_highres(
    out: Path,
    num_sites: int,
    seed: int = 0,
    size: int = 512,
    images_per_site: int = 64,
    heldout_images: int = 64,
) -> None:
    """Write ``num_sites`` shifted sites and an unshifted held-out set to ``out``."""
    if num_sites < 1 or images_per_site < 1 or size < 16:
        raise ValueError(
            f"need num_sites >= 1, images_per_site >= 1 and size >= 16, found "
            f"{num_sites}, {images_per_site}, {size}"
        )
    rng = np.random.default_rng(seed)
    for site in range(num_sites):
        shift = site_shift(site, num_sites, rng)
        write_split_folder(site_dir(out, site), images_per_site, size, shift, rng)
    if heldout_images:
        folder = Path(out) / HELDOUT_DIR
        write_split_folder(folder, heldout_images, size, SiteShift(), rng, None)
