"""Image folders with labels, the layout of ISIC 2018, Messidor-2, DDSM and COVID CXR.

Two layouts are read, both per site folder:

1. a labels CSV (``labels.csv``) next to an image folder (``images/``): one row
   per image, an image-id column, and either one label column (integer grades
   as in Messidor-2, or class names) or one-hot class columns (ISIC 2018's
   ``image,MEL,NV,...`` ground truth: set the label column to ``""``). An
   optional split column holds ``train`` / ``val`` / ``test``. Image ids may
   omit the file suffix (ISIC); rows with an empty label (ungradable
   Messidor-2 images) are skipped with a warning.
2. class sub-folders, ``<root>/<class>/<image>`` or, with official splits,
   ``<root>/<split>/<class>/<image>`` (the torchvision ImageFolder layout the
   FPT authors use for DDSM and COVID).

Images without a split are assigned train / val / test 70/10/20 at random
with a fixed seed (FPT §3.1).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SPLITS = ("train", "val", "test")
PAPER_SPLIT = (0.7, 0.1, 0.2)


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image file; ``split`` is empty until assigned."""

    path: Path
    label: int
    split: str = ""


@dataclass(frozen=True)
class LabelsLayout:
    """Where the labels CSV and images live inside a site folder, and its columns."""

    labels_csv: str = "labels.csv"
    image_dir: str = "images"
    image_column: str = "image"
    label_column: str = "label"
    split_column: str = "split"


def read_image_folder(
    folder: Path, layout: LabelsLayout, class_names: Sequence[str] = ()
) -> list[ImageRecord]:
    """Every labelled image of ``folder``, from its labels CSV or class folders."""
    folder = Path(folder)
    if (folder / layout.labels_csv).is_file():
        return read_labels_csv(folder, layout, class_names)
    has_splits = any((folder / split).is_dir() for split in SPLITS)
    if folder.is_dir() and (has_splits or _class_folders(folder)):
        return scan_class_folders(folder, class_names)
    raise FileNotFoundError(
        f"{folder} has neither {layout.labels_csv} (with images under "
        f"{layout.image_dir}/) nor class sub-folders: put the site's images "
        "there, or write synthetic ones (fedmed.data.synth_highres)"
    )


def read_labels_csv(
    folder: Path, layout: LabelsLayout, class_names: Sequence[str] = ()
) -> list[ImageRecord]:
    """Records of a labels CSV; see the module docstring for the accepted columns."""
    csv_path = Path(folder) / layout.labels_csv
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    if layout.image_column not in header:
        raise ValueError(
            f"{csv_path}: no image column {layout.image_column!r} in header "
            f"{header}; set fpt.image-column"
        )
    one_hot = [c for c in header if c not in (layout.image_column, layout.split_column)]
    if layout.label_column:
        if layout.label_column not in header:
            raise ValueError(
                f"{csv_path}: no label column {layout.label_column!r} in header "
                f"{header}; set fpt.label-column ('' for one-hot class columns)"
            )
        one_hot = []
    elif class_names:
        one_hot = _order_one_hot(one_hot, class_names, csv_path)
    image_root = Path(folder) / layout.image_dir
    records, skipped = [], 0
    for row in rows:
        if one_hot:
            label = int(np.argmax([float(row[c]) for c in one_hot]))
        elif not row[layout.label_column].strip():
            skipped += 1
            continue
        else:
            label = parse_label(row[layout.label_column], class_names, csv_path)
        path = resolve_image(image_root, row[layout.image_column].strip())
        records.append(ImageRecord(path, label, row.get(layout.split_column, "") or ""))
    if skipped:
        log.warning("%s: skipped %d rows with an empty label", csv_path, skipped)
    _check_splits(records, csv_path)
    return records


def _order_one_hot(
    columns: list[str], class_names: Sequence[str], where: Path
) -> list[str]:
    missing = [c for c in class_names if c not in columns]
    if missing:
        raise ValueError(f"{where}: one-hot columns {columns} lack classes {missing}")
    return list(class_names)


def parse_label(value: str, class_names: Sequence[str], where: Path) -> int:
    """A label cell as a class index: a class name when names are configured."""
    value = value.strip()
    if class_names:
        if value not in class_names:
            raise ValueError(
                f"{where}: label {value!r} is not one of the configured classes "
                f"{list(class_names)}"
            )
        return list(class_names).index(value)
    try:
        return int(float(value))
    except ValueError:
        raise ValueError(
            f"{where}: label {value!r} is not an integer; list the class names "
            "in fpt.class-names (comma-separated, in label order)"
        ) from None


def resolve_image(image_root: Path, image_id: str) -> Path:
    """The file of ``image_id`` under ``image_root``, trying known suffixes."""
    path = image_root / image_id
    if path.is_file():
        return path
    for suffix in IMAGE_SUFFIXES:
        candidate = image_root / f"{image_id}{suffix}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"image {image_id!r} listed in the labels CSV is not in {image_root} "
        f"(tried suffixes {', '.join(IMAGE_SUFFIXES)}); copy it there"
    )


def _class_folders(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.is_dir() and p.name not in SPLITS and not p.name.startswith(".")
    )


def scan_class_folders(
    folder: Path, class_names: Sequence[str] = ()
) -> list[ImageRecord]:
    """Records of ``<root>/[<split>/]<class>/<image>``; classes sorted by name."""
    folder = Path(folder)
    roots = [(folder / s, s) for s in SPLITS if (folder / s).is_dir()] or [(folder, "")]
    found = sorted({d.name for root, _ in roots for d in _class_folders(root)})
    names = list(class_names) or found
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise ValueError(f"{folder}: class folders {unknown} are not in {names}")
    records = []
    for root, split in roots:
        for label, name in enumerate(names):
            for path in sorted((root / name).glob("*")):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    records.append(ImageRecord(path, label, split))
    return records


def _check_splits(records: Sequence[ImageRecord], where: Path) -> None:
    bad = sorted({r.split for r in records} - {"", *SPLITS})
    if bad:
        raise ValueError(f"{where}: split values {bad} are not one of {SPLITS}")


def split_cuts(count: int, fractions: Sequence[float] = PAPER_SPLIT) -> np.ndarray:
    """Boundaries cutting ``count`` items into train / val / test by ``fractions``."""
    return np.rint(np.cumsum(fractions)[:-1] * count).astype(int)


def assign_splits(
    records: Sequence[ImageRecord], seed: int, fractions: Sequence[float] = PAPER_SPLIT
) -> list[ImageRecord]:
    """Give records without a split a seeded random train / val / test split."""
    unsplit = [i for i, r in enumerate(records) if not r.split]
    order = np.random.default_rng(seed).permutation(len(unsplit))
    out = list(records)
    for split, chunk in zip(
        SPLITS, np.split(order, split_cuts(len(unsplit), fractions)), strict=True
    ):
        for position in chunk:
            index = unsplit[position]
            out[index] = replace(records[index], split=split)
    return out


def load_rgb(path: Path) -> torch.Tensor:
    """An image file as a float RGB tensor ``(3, H, W)`` in [0, 1]."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
