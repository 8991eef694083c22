"""Chest X-ray image + report pairs: IU X-ray and Montgomery County CXR loaders.

IU X-ray (Indiana University, as distributed on Kaggle) is a folder with
``indiana_reports.csv`` (``uid, MeSH, Problems, image, indication,
comparison, findings, impression``), ``indiana_projections.csv`` (``uid,
filename, projection`` with ``Frontal`` / ``Lateral``) and the PNG images in
``images/images_normalized/`` (``images/`` or the folder itself also work).
SeLoRA uses frontal projections only and the report's findings as the prompt;
reports with empty findings are skipped.

Montgomery County CXR is ``CXR_png/MCUCXR_XXXX_Y.png`` with one clinical
reading ``ClinicalReadings/MCUCXR_XXXX_Y.txt`` per image (``Patient's Sex``,
``Patient's Age`` lines, then the finding), optionally inside
``MontgomerySet/``. The prompt concatenates sex, age and finding, as the
SeLoRA paper describes.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

IU_REPORTS = "indiana_reports.csv"
IU_PROJECTIONS = "indiana_projections.csv"
IU_IMAGE_DIRS = ("images/images_normalized", "images_normalized", "images", ".")


@dataclass(frozen=True)
class ReportImage:
    """One image with the report text used as its prompt."""

    image: Path
    report: str
    uid: str


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: an IU X-ray folder needs {IU_REPORTS} and "
            f"{IU_PROJECTIONS} next to images/images_normalized/ (the Kaggle layout)"
        )
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _iu_image_dir(folder: Path, filename: str) -> Path:
    for sub in IU_IMAGE_DIRS:
        if (folder / sub / filename).is_file():
            return folder / sub
    raise FileNotFoundError(
        f"image {filename} of {IU_PROJECTIONS} is in none of "
        f"{', '.join(str(folder / s) for s in IU_IMAGE_DIRS)}; put the PNGs in "
        f"{folder / IU_IMAGE_DIRS[0]}"
    )


def load_iu_xray(
    folder: str | Path, projection: str = "Frontal", field: str = "findings"
) -> list[ReportImage]:
    """IU X-ray pairs of one projection whose report ``field`` is not empty."""
    root = Path(folder)
    reports = {row["uid"]: row for row in _read_csv(root / IU_REPORTS)}
    rows = [
        r
        for r in _read_csv(root / IU_PROJECTIONS)
        if r["projection"].strip().lower() == projection.lower()
    ]
    if not rows:
        raise ValueError(f"{root / IU_PROJECTIONS} has no {projection!r} images")
    image_dir = _iu_image_dir(root, rows[0]["filename"])
    pairs = []
    for row in rows:
        report = reports.get(row["uid"], {})
        text = " ".join((report.get(field) or "").split())
        if text:
            pairs.append(ReportImage(image_dir / row["filename"], text, row["uid"]))
    return pairs


def montgomery_prompt(reading: str) -> str:
    """Sex, age and finding of a Montgomery clinical reading as one prompt."""
    sex, age, finding = "", "", []
    for line in reading.splitlines():
        line = line.strip()
        if match := re.match(r"patient'?s sex:\s*(\w+)", line, re.IGNORECASE):
            sex = {"f": "female", "m": "male"}.get(match[1].lower(), match[1].lower())
        elif match := re.match(r"patient'?s age:\s*0*(\d+)", line, re.IGNORECASE):
            age = f"{int(match[1])} years"
        elif line:
            finding.append(line)
    parts = [p for p in (sex, age, " ".join(finding)) if p]
    return ", ".join(parts)


def load_montgomery(folder: str | Path) -> list[ReportImage]:
    """Montgomery CXR pairs (every PNG with its clinical reading)."""
    root = Path(folder)
    if (root / "MontgomerySet").is_dir():
        root = root / "MontgomerySet"
    images, readings = root / "CXR_png", root / "ClinicalReadings"
    if not images.is_dir() or not readings.is_dir():
        raise FileNotFoundError(
            f"{root} needs CXR_png/ and ClinicalReadings/ (the Montgomery County "
            "release layout); put the unpacked MontgomerySet there"
        )
    pairs = []
    for image in sorted(images.glob("*.png")):
        reading = readings / f"{image.stem}.txt"
        if not reading.is_file():
            raise FileNotFoundError(
                f"clinical reading {reading} for {image.name} is missing"
            )
        pairs.append(
            ReportImage(image, montgomery_prompt(reading.read_text()), image.stem)
        )
    if not pairs:
        raise FileNotFoundError(f"no PNG images in {images}")
    return pairs


def split_pairs(
    pairs: Sequence[ReportImage], fractions: tuple[float, float, float], seed: int
) -> tuple[list[ReportImage], list[ReportImage], list[ReportImage]]:
    """Seeded train / val / test split (SeLoRA: 80/16/4 IU X-ray, 80/20 Montgomery)."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_train = int(round(fractions[0] * len(pairs)))
    n_val = int(round(fractions[1] * len(pairs)))
    picked = [pairs[i] for i in order]
    return (
        picked[:n_train],
        picked[n_train : n_train + n_val],
        picked[n_train + n_val :],
    )


def image_transform(resolution: int) -> transforms.Compose:
    """Shortest side to ``resolution``, centre crop, RGB in [-1, 1] (SD input)."""
    return transforms.Compose(
        [
            transforms.Resize(
                resolution, interpolation=transforms.InterpolationMode.BILINEAR
            ),
            transforms.CenterCrop(resolution),
            transforms.ToTensor(),
            transforms.Normalize([0.5], [0.5]),
        ]
    )


class ReportImageDataset(Dataset):
    """(image tensor in [-1, 1], 3 x R x R; report text) pairs."""

    def __init__(self, pairs: Sequence[ReportImage], resolution: int) -> None:
        self.pairs = list(pairs)
        self.transform = image_transform(resolution)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        pair = self.pairs[index]
        with Image.open(pair.image) as image:
            pixels = self.transform(image.convert("RGB"))
        return pixels, pair.report
