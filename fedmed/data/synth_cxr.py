"""Synthetic chest X-rays with reports, written in the IU X-ray layout.

Each case draws findings (cardiomegaly, left / right pleural effusion, an
upper-lobe nodule, pneumothorax), writes a report whose words name exactly
those findings, and renders a frontal radiograph in which each finding is
visible where a radiologist would look: an enlarged cardiac silhouette, a
bright fluid level at a lung base, a bright round opacity in an upper zone, a
dark lung edge without markings. A lateral view is written too, as in IU
X-ray. Sites differ by acquisition (brightness, contrast, noise) and by
finding prevalence. Layout per site (and ``heldout/``): ``indiana_reports.csv``,
``indiana_projections.csv`` and ``images/images_normalized/*.png`` (grey PNG),
so :func:`fedmed.data.cxr_reports.load_iu_xray` reads it like the real release.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fedmed.data.cxr_reports import IU_PROJECTIONS, IU_REPORTS
from fedmed.data.sites import HELDOUT_DIR, site_dir

FINDINGS = ("cardiomegaly", "left_effusion", "right_effusion", "nodule", "pneumothorax")
BASE_PREVALENCE = np.array([0.3, 0.25, 0.25, 0.2, 0.15])
SENTENCES = {
    "cardiomegaly": ("the heart is enlarged.", "heart size is normal."),
    "left_effusion": ("small left pleural effusion.", ""),
    "right_effusion": ("small right pleural effusion.", ""),
    "nodule": ("nodule in the right upper lobe.", ""),
    "pneumothorax": ("left pneumothorax.", "no pneumothorax."),
}
REPORT_WORDS = tuple(
    sorted(
        {w.strip(".") for pair in SENTENCES.values() for s in pair for w in s.split()}
        | {
            "lungs",
            "are",
            "clear",
            "no",
            "acute",
            "cardiopulmonary",
            "abnormality",
            "with",
            "and",
            "effusion",
            "pleural",
            "findings",
            "normal",
        }
    )
)


@dataclass(frozen=True)
class SiteShift:
    """Acquisition and population differences of one site."""

    brightness: float
    contrast: float
    noise_std: float
    prevalence: np.ndarray


def report_for(findings: dict[str, bool]) -> tuple[str, str]:
    """(findings text, impression) naming exactly the present findings."""
    sentences = [
        SENTENCES[name][0 if present else 1] for name, present in findings.items()
    ]
    text = " ".join(s for s in sentences if s)
    if not any(
        findings[n]
        for n in ("left_effusion", "right_effusion", "nodule", "pneumothorax")
    ):
        text += " lungs are clear."
    present = [n.replace("_", " ") for n, p in findings.items() if p]
    impression = (
        ("findings: " + ", ".join(present) + ".")
        if present
        else ("no acute cardiopulmonary abnormality.")
    )
    return text, impression


def _ellipse(xx, yy, cx, cy, rx, ry) -> np.ndarray:
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def render_frontal(findings: dict[str, bool], size: int, rng: np.random.Generator):
    """Frontal chest radiograph in [0, 1] (viewer's right = patient's left)."""
    axis = np.linspace(-1, 1, size)
    xx, yy = np.meshgrid(axis, axis)  # yy grows downwards
    img = np.full((size, size), 0.05)
    img[_ellipse(xx, yy, 0, 0.05, 0.88, 0.98)] = 0.55
    lungs = {side: _ellipse(xx, yy, side * 0.4, -0.05, 0.29, 0.62) for side in (-1, 1)}
    markings = (
        0.04 * np.sin(9 * np.pi * yy + rng.uniform(0, 6)) * np.cos(5 * np.pi * xx)
    )
    for mask in lungs.values():
        img[mask] = 0.2 + markings[mask]
    img[np.abs(xx) < 0.07] = 0.72  # spine / mediastinum
    for k in range(5):  # ribs
        ribs = np.abs(yy + 0.55 - 0.24 * k - 0.12 * xx**2) < 0.015
        img[ribs & (lungs[-1] | lungs[1])] += 0.12
    scale = 1.5 if findings["cardiomegaly"] else 1.0
    img[_ellipse(xx, yy, 0.1, 0.3, 0.22 * scale, 0.18 * scale)] = 0.78
    for side, name in ((1, "left_effusion"), (-1, "right_effusion")):
        if findings[name]:
            level = 0.3 + 0.05 * (xx - side * 0.4) ** 2 * 10
            img[lungs[side] & (yy > level)] = 0.68
    if findings["nodule"]:
        img[_ellipse(xx, yy, -0.42, -0.35, 0.07, 0.07)] = 0.85
    if findings["pneumothorax"]:
        edge = lungs[1] & (xx > 0.52 + 0.1 * yy**2)
        img[edge] = 0.06
    return np.clip(img, 0, 1)


def render_lateral(findings: dict[str, bool], size: int) -> np.ndarray:
    """Lateral view: chest silhouette, one lung field, heart in front."""
    axis = np.linspace(-1, 1, size)
    xx, yy = np.meshgrid(axis, axis)
    img = np.full((size, size), 0.05)
    img[_ellipse(xx, yy, 0, 0.05, 0.7, 0.95)] = 0.55
    img[_ellipse(xx, yy, 0.05, -0.05, 0.5, 0.65)] = 0.22
    scale = 1.4 if findings["cardiomegaly"] else 1.0
    img[_ellipse(xx, yy, -0.25, 0.3, 0.25 * scale, 0.25 * scale)] = 0.75
    return img


def acquire(img: np.ndarray, shift: SiteShift, rng: np.random.Generator) -> np.ndarray:
    """Site contrast / brightness / noise, quantised to 8-bit grey."""
    img = (img - 0.5) * shift.contrast + 0.5 + shift.brightness
    img = img + rng.normal(0, shift.noise_std, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def site_shifts(num_sites: int, rng: np.random.Generator) -> list[SiteShift]:
    """Per-site acquisition shift and finding prevalence (label skew)."""
    shifts = []
    for _ in range(num_sites):
        skew = rng.uniform(0.4, 1.6, len(FINDINGS))
        shifts.append(
            SiteShift(
                brightness=float(rng.uniform(-0.08, 0.08)),
                contrast=float(rng.uniform(0.8, 1.2)),
                noise_std=float(rng.uniform(0.005, 0.03)),
                prevalence=np.clip(BASE_PREVALENCE * skew, 0.02, 0.9),
            )
        )
    return shifts


def report_row(uid: str, found: dict[str, bool]) -> dict[str, str]:
    """One ``indiana_reports.csv`` row for a case with findings ``found``."""
    text, impression = report_for(found)
    mesh = ";".join(n for n, p in found.items() if p) or "normal"
    return {
        "uid": uid,
        "MeSH": mesh,
        "Problems": mesh,
        "image": "Xray Chest PA",
        "indication": "synthetic",
        "comparison": "None.",
        "findings": text,
        "impression": impression,
    }


def write_site(
    folder: Path,
    shift: SiteShift,
    cases: int,
    size: int,
    uid_start: int,
    rng: np.random.Generator,
) -> Path:
    """Write ``cases`` synthetic studies (frontal + lateral) in the IU X-ray layout."""
    images = folder / "images" / "images_normalized"
    images.mkdir(parents=True, exist_ok=True)
    reports, projections = [], []
    for i in range(cases):
        uid = str(uid_start + i)
        found = dict(
            zip(
                FINDINGS,
                (rng.random(len(FINDINGS)) < shift.prevalence).tolist(),
                strict=True,
            )
        )
        reports.append(report_row(uid, found))
        for view, pixels in (
            ("Frontal", render_frontal(found, size, rng)),
            ("Lateral", render_lateral(found, size)),
        ):
            number = 1001 if view == "Frontal" else 2001
            name = f"{uid}_IM-{uid_start // 1000:04d}-{number}.dcm.png"
            Image.fromarray(acquire(pixels, shift, rng)).save(images / name)
            projections.append({"uid": uid, "filename": name, "projection": view})
    _write_csv(folder / IU_REPORTS, reports)
    _write_csv(folder / IU_PROJECTIONS, projections)
    return folder


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def synthesize(
    out: str | Path,
    num_sites: int,
    seed: int = 0,
    size: int = 64,
    cases_per_site: int = 60,
    heldout_cases: int = 30,
) -> list[Path]:
    """Write ``out/site_<k>/`` for k < ``num_sites`` plus ``out/heldout/``."""
    if num_sites < 1 or cases_per_site < 1 or size < 16:
        raise ValueError(
            f"need num_sites >= 1, cases_per_site >= 1 and size >= 16, found "
            f"{num_sites}, {cases_per_site}, {size}"
        )
    rng = np.random.default_rng(seed)
    shifts = site_shifts(num_sites, rng)
    paths = [
        write_site(
            site_dir(Path(out), k), shift, cases_per_site, size, (k + 1) * 100_000, rng
        )
        for k, shift in enumerate(shifts)
    ]
    if heldout_cases:
        neutral = SiteShift(0.0, 1.0, 0.015, BASE_PREVALENCE)
        paths.append(
            write_site(
                Path(out) / HELDOUT_DIR, neutral, heldout_cases, size, 900_000, rng
            )
        )
    return paths
