"""Synthetic DermaMNIST: skin-lesion-like images in the official npz format.

Each of the 7 DermaMNIST classes gets a visual signature (lesion colour,
size, elongation, border irregularity, internal texture) so that a model can
learn the task, plus per-image nuisance (skin tone, position, angle). Sites
differ as hospitals do: acquisition shift (brightness, contrast, noise level)
and label skew (class priors mixed with a Dirichlet draw). Files are written
with :func:`fedmed.data.medmnist_npz.save_npz`, so medmnist's own dataset
class reads them exactly like the real release.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedmed.data.medmnist_npz import save_npz
from fedmed.data.sites import HELDOUT_DIR, site_dir

# Class frequencies of the real DermaMNIST training split (akiec ... vasc).
DERMAMNIST_PRIOR = np.array([228, 359, 769, 80, 779, 4693, 99], dtype=float)
DERMAMNIST_PRIOR /= DERMAMNIST_PRIOR.sum()

# (R, G, B) lesion colour, radius, elongation, border irregularity, texture freq.
_SIGNATURES = np.array(
    [
        [200, 90, 80, 0.45, 1.0, 0.25, 0.0],  # akiec: red scaly, irregular
        [230, 170, 170, 0.38, 1.3, 0.05, 6.0],  # bcc: pearly pink, textured
        [140, 100, 60, 0.55, 1.1, 0.10, 3.0],  # bkl: light brown, large
        [170, 120, 110, 0.28, 1.0, 0.02, 0.0],  # df: small firm nodule
        [50, 30, 40, 0.52, 1.2, 0.35, 9.0],  # mel: dark, very irregular
        [110, 70, 50, 0.42, 1.0, 0.03, 0.0],  # nv: round brown
        [170, 30, 90, 0.34, 1.6, 0.08, 12.0],  # vasc: purple-red, lacy
    ]
)


@dataclass(frozen=True)
class SiteShift:
    """Acquisition differences of one site."""

    brightness: float
    contrast: float
    noise_std: float
    prior: np.ndarray


def render_images(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw one lesion image per label: uint8 ``(N, size, size, 3)``."""
    n = len(labels)
    axis = np.linspace(-1.0, 1.0, size)
    xx, yy = np.meshgrid(axis, axis)
    sig = _SIGNATURES[labels]
    centre = rng.uniform(-0.15, 0.15, (n, 2))
    angle = rng.uniform(0, np.pi, n)
    radius = sig[:, 3] * rng.uniform(0.85, 1.15, n)
    dx = xx[None] - centre[:, 0, None, None]
    dy = yy[None] - centre[:, 1, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos
    rho = np.sqrt((u * sig[:, 4, None, None]) ** 2 + v**2)
    theta = np.arctan2(v, u)
    phase = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    wobble = 1 + sig[:, 5, None, None] * np.sin(5 * theta + phase)
    edge = radius[:, None, None] * wobble
    mask = 1 / (1 + np.exp((rho - edge) / (0.03 + 0.02 * sig[:, 5, None, None])))
    texture = 1 + 0.18 * np.sin(sig[:, 6, None, None] * np.pi * (u + v) + phase)
    skin = rng.uniform([190, 140, 120], [240, 190, 170], (n, 3))
    lesion = sig[:, :3] * rng.uniform(0.9, 1.1, (n, 1))
    img = skin[:, None, None, :] * (1 - mask[..., None]) + (
        lesion[:, None, None, :] * texture[..., None] * mask[..., None]
    )
    return img


def apply_shift(img: np.ndarray, shift: SiteShift, rng: np.random.Generator) -> np.ndarray:
    """Site acquisition shift, then sensor noise, then quantise to uint8."""
    mean = img.mean(axis=(1, 2, 3), keepdims=True)
    out = (img - mean) * shift.contrast + mean * shift.brightness
    out = out + rng.normal(0, shift.noise_std, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def site_shifts(num_sites: int, label_alpha: float, rng: np.random.Generator) -> list[SiteShift]:
    """Per-site shift; site 0 is the reference acquisition."""
    shifts = []
    for k in range(num_sites):
        skew = rng.dirichlet(np.full(7, label_alpha))
        prior = 0.5 * DERMAMNIST_PRIOR + 0.5 * skew
        if k == 0:
            shifts.append(SiteShift(1.0, 1.0, 6.0, prior))
            continue
        shifts.append(
            SiteShift(
                brightness=float(rng.uniform(0.8, 1.15)),
                contrast=float(rng.uniform(0.7, 1.25)),
                noise_std=float(rng.uniform(4.0, 16.0)),
                prior=prior,
            )
        )
    return shifts


def _sample(n: int, shift: SiteShift, size: int, rng: np.random.Generator):
    labels = rng.choice(7, size=n, p=shift.prior)
    # Every class present in each split keeps per-site AUC defined.
    labels[: min(n, 7)] = np.arange(min(n, 7))
    labels = rng.permutation(labels)
    return apply_shift(render_images(labels, size, rng), shift, rng), labels


def synthesize(
    out: str | Path,
    num_sites: int = 3,
    size: int = 28,
    seed: int = 0,
    samples_per_site: int = 600,
    label_alpha: float = 1.0,
    heldout_samples: int = 400,
) -> list[Path]:
    """Write ``out/site_<k>/dermamnist[_S].npz`` for each site and ``out/heldout/``.

    Each site's samples are split 70/10/20 into train/val/test like the
    official release. The held-out set mixes all sites' acquisitions.
    """
    if num_sites < 1 or samples_per_site < 10:
        raise ValueError("need >= 1 site and >= 10 samples per site")
    rng = np.random.default_rng(seed)
    shifts = site_shifts(num_sites, label_alpha, rng)
    counts = {
        "train": int(samples_per_site * 0.7),
        "val": max(7, int(samples_per_site * 0.1)),
        "test": max(7, int(samples_per_site * 0.2)),
    }
    paths = []
    for k, shift in enumerate(shifts):
        splits = {s: _sample(n, shift, size, rng) for s, n in counts.items()}
        paths.append(save_npz(site_dir(Path(out), k), splits, size=size))
    per_site = max(7, heldout_samples // num_sites)
    held = [_sample(per_site, s, size, rng) for s in shifts]
    images = np.concatenate([h[0] for h in held])
    labels = np.concatenate([h[1] for h in held])
    tiny = (images[:7], labels[:7])
    held_splits = {"train": tiny, "val": tiny, "test": (images, labels)}
    paths.append(save_npz(Path(out) / HELDOUT_DIR, held_splits, size=size))
    return paths
