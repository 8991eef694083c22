"""Synthetic BraTS phantoms written as real NIfTI case folders, in both namings.

A phantom is a skull-stripped brain (ellipsoid with ventricles and smooth
texture) holding one glioma made of a necrotic core (label NETC), an enhancing
rim (ET) and surrounding oedema (SNFH), all with irregular, noise-deformed
borders. Four modalities get the contrasts radiologists rely on: enhancement
bright on T1CE only, oedema bright on T2 and FLAIR, CSF bright on T2 and dark
on FLAIR. Sites differ as scanners do: intensity scale, Rician noise, a smooth
multiplicative bias field and acquisition resolution, so that low-quality,
BraTS-Africa-like sites (thick slices, low in-plane resolution, strong noise
and bias) sit next to high-quality BraTS-2021-like sites.

Output layout (what :func:`fedmed.data.brats.find_cases` reads)::

    out/site_<k>/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz   # 2021 naming
    out/site_<k>/<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz    # 2023/Africa naming
    out/heldout/<case>/...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from scipy import ndimage

from fedmed.data.brats import MODALITIES, SUFFIXES, Naming, stored_labels
from fedmed.data.sites import HELDOUT_DIR, site_dir

NamingChoice = Literal["2021", "2023", "mixed"]
DEFAULT_SHAPE = (48, 48, 32)

# Tissue order: brain parenchyma, CSF, oedema (SNFH), enhancing rim (ET), core (NETC).
_TISSUES = ("brain", "csf", "oedema", "rim", "core")
_CONTRAST = {
    "t1": (0.62, 0.18, 0.48, 0.55, 0.30),
    "t1ce": (0.62, 0.18, 0.50, 1.00, 0.28),
    "t2": (0.42, 1.00, 0.86, 0.62, 0.95),
    "flair": (0.45, 0.08, 0.95, 0.72, 0.55),
}


@dataclass(frozen=True)
class SiteProfile:
    """Acquisition of one site: what makes its scans look different."""

    name: str
    naming: Naming
    intensity_scale: float
    noise_std: float
    bias_strength: float
    downsample: tuple[int, int, int]


HIGH_QUALITY = SiteProfile("high-quality", "2021", 1000.0, 0.02, 0.10, (1, 1, 1))
LOW_QUALITY = SiteProfile("africa-like", "2023", 300.0, 0.08, 0.35, (2, 2, 2))


def site_profile(
    site: int, naming: NamingChoice, rng: np.random.Generator
) -> SiteProfile:
    """Even sites high-quality, odd sites low-quality, each with a random jitter."""
    base = HIGH_QUALITY if site % 2 == 0 else LOW_QUALITY
    chosen: Naming = base.naming if naming == "mixed" else naming
    return SiteProfile(
        name=base.name,
        naming=chosen,
        intensity_scale=base.intensity_scale * float(rng.uniform(0.7, 1.3)),
        noise_std=base.noise_std * float(rng.uniform(0.8, 1.2)),
        bias_strength=base.bias_strength * float(rng.uniform(0.8, 1.2)),
        downsample=base.downsample,
    )


def _smooth_noise(shape: tuple[int, ...], sigma: float, rng: np.random.Generator):
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (np.abs(field).max() + 1e-8)


def _ellipsoid(grid: np.ndarray, centre, radii) -> np.ndarray:
    """Normalised ellipsoidal distance (1 on the surface) on a ``(3, X, Y, Z)`` grid."""
    c = np.asarray(centre, dtype=float)[:, None, None, None]
    r = np.asarray(radii, dtype=float)[:, None, None, None]
    return np.sqrt((((grid - c) / r) ** 2).sum(axis=0))


def phantom_labels(shape, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tissue map (indices into ``_TISSUES``, -1 outside) and canonical labels."""
    grid = np.indices(shape).astype(float)
    size = np.array(shape, dtype=float)
    wobble = 1.0 + 0.06 * _smooth_noise(shape, 4.0, rng)
    brain = _ellipsoid(grid, size / 2 - 0.5, size * rng.uniform(0.40, 0.46, 3)) * wobble
    tissue = np.full(shape, -1, dtype=np.int8)
    tissue[brain <= 1.0] = 0
    for side in (-1, 1):
        centre = size / 2 + np.array([side * size[0] * 0.08, 0.0, 0.0])
        vent = _ellipsoid(grid, centre, size * np.array([0.04, 0.12, 0.10]))
        tissue[(vent <= 1.0) & (tissue == 0)] = 1
    offset = rng.uniform(-0.18, 0.18, 3) * size
    centre = size / 2 + offset
    scale = min(shape[:2]) * rng.uniform(0.16, 0.22)
    deform = 1.0 + 0.25 * _smooth_noise(shape, 2.5, rng)
    dist = _ellipsoid(grid, centre, [scale, scale, scale * 0.9]) * deform
    core_r, rim_r = rng.uniform(0.22, 0.32), rng.uniform(0.45, 0.58)
    labels = np.zeros(shape, dtype=np.uint8)
    inside = tissue >= 0
    for limit, tissue_id, label in ((1.0, 2, 2), (rim_r, 3, 3), (core_r, 4, 1)):
        region = (dist <= limit) & inside
        tissue[region] = tissue_id
        labels[region] = label
    return tissue, labels


def render_modality(
    tissue: np.ndarray,
    modality: str,
    profile: SiteProfile,
    texture: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """One modality volume: contrast, texture, bias field, resolution loss, noise."""
    contrast = np.asarray(_CONTRAST[modality])
    brain = tissue >= 0
    clean = np.where(brain, contrast[np.clip(tissue, 0, None)], 0.0)
    clean = clean * (1.0 + 0.06 * texture)
    ramp = np.indices(tissue.shape).astype(float)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    gradient = np.tensordot(
        direction, ramp / np.array(tissue.shape)[:, None, None, None], 1
    )
    clean = clean * np.exp(profile.bias_strength * (gradient - gradient.mean()))
    clean = _degrade_resolution(clean, profile.downsample)
    real = clean + rng.normal(0.0, profile.noise_std, clean.shape)
    imag = rng.normal(0.0, profile.noise_std, clean.shape)
    rician = np.sqrt(real**2 + imag**2)
    return np.where(brain, rician * profile.intensity_scale, 0.0).astype(np.float32)


def _degrade_resolution(
    volume: np.ndarray, factors: tuple[int, int, int]
) -> np.ndarray:
    """Block-average by ``factors`` then repeat back: coarse voxels on the same grid."""
    if factors == (1, 1, 1):
        return volume
    shape = volume.shape
    padded_shape = [
        int(np.ceil(s / f) * f) for s, f in zip(shape, factors, strict=True)
    ]
    padded = np.zeros(padded_shape)
    padded[: shape[0], : shape[1], : shape[2]] = volume
    blocks = padded.reshape(
        padded_shape[0] // factors[0], factors[0],
        padded_shape[1] // factors[1], factors[1],
        padded_shape[2] // factors[2], factors[2],
    ).mean(axis=(1, 3, 5))  # fmt: skip
    for axis, factor in enumerate(factors):
        blocks = np.repeat(blocks, factor, axis=axis)
    return blocks[: shape[0], : shape[1], : shape[2]]


def case_id_for(naming: Naming, index: int) -> str:
    """Case folder names as the real releases spell them."""
    if naming == "2021":
        return f"BraTS2021_{index:05d}"
    return f"BraTS-SSA-{index:05d}-000"


def write_case(
    folder: Path,
    case_id: str,
    naming: Naming,
    volumes: dict[str, np.ndarray],
    labels: np.ndarray,
) -> Path:
    """Write one case folder as gzipped NIfTI in ``naming``; returns the folder."""
    case_dir = folder / case_id
    case_dir.mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    for modality in MODALITIES:
        path = case_dir / f"{case_id}{SUFFIXES[naming][modality]}.nii.gz"
        nib.save(nib.Nifti1Image(volumes[modality], affine), str(path))
    seg = stored_labels(labels, naming)
    path = case_dir / f"{case_id}{SUFFIXES[naming]['seg']}.nii.gz"
    nib.save(nib.Nifti1Image(seg, affine), str(path))
    return case_dir


def synth_case(
    profile: SiteProfile, shape: tuple[int, int, int], rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Volumes per canonical modality and canonical labels of one phantom."""
    tissue, labels = phantom_labels(shape, rng)
    texture = _smooth_noise(shape, 1.5, rng)
    volumes = {m: render_modality(tissue, m, profile, texture, rng) for m in MODALITIES}
    return volumes, labels


def synthesize(
    out: str | Path,
    num_sites: int,
    cases_per_site: int,
    seed: int = 0,
    naming: NamingChoice = "mixed",
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    heldout_cases: int | None = None,
) -> list[Path]:
    """Write ``num_sites`` site folders of phantoms plus ``out/heldout``.

    ``naming="mixed"`` writes even (high-quality) sites in BraTS 2021 naming
    and odd (Africa-like) sites in BraTS 2023/Africa naming; the held-out set
    alternates both profiles. Returns the case folders written.
    """
    if num_sites < 1 or cases_per_site < 1:
        raise ValueError(
            f"need at least one site and one case per site, found sites={num_sites}, "
            f"cases={cases_per_site}"
        )
    if naming not in ("2021", "2023", "mixed"):
        raise ValueError(f"naming must be '2021', '2023' or 'mixed', found {naming!r}")
    root = Path(out)
    rng = np.random.default_rng(seed)
    plan: list[tuple[Path, SiteProfile]] = []
    for site in range(num_sites):
        profile = site_profile(site, naming, rng)
        plan += [(site_dir(root, site), profile)] * cases_per_site
    for k in range(cases_per_site if heldout_cases is None else heldout_cases):
        plan.append((root / HELDOUT_DIR, site_profile(k, naming, rng)))
    written = []
    for index, (folder, profile) in enumerate(plan):
        volumes, labels = synth_case(profile, shape, rng)
        case_id = case_id_for(profile.naming, index)
        written.append(write_case(folder, case_id, profile.naming, volumes, labels))
    return written
