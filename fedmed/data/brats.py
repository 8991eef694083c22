"""BraTS NIfTI case folders (2021 and 2023 / BraTS-Africa namings) and tumour regions.

Two on-disk conventions exist and both are read as-is:

* BraTS 2021: ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``, labels
  0 (background), 1 (necrotic / non-enhancing core), 2 (oedema), 4 (enhancing).
* BraTS 2023 and BraTS-Africa: ``<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``,
  labels 0, 1 (NETC), 2 (SNFH), 3 (ET).

Every case is returned with canonical modality names (``t1``, ``t1ce``,
``t2``, ``flair``) and canonical labels 0/1/2/3 (the 2023 coding), so that the
evaluation regions are computed one way: ET = 3, TC = 1 or 3, WT = 1, 2 or 3.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np

Naming = Literal["2021", "2023"]

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
"""Canonical modality names, in the order volumes are stacked."""

SUFFIXES: dict[Naming, dict[str, str]] = {
    "2021": {
        "t1": "_t1",
        "t1ce": "_t1ce",
        "t2": "_t2",
        "flair": "_flair",
        "seg": "_seg",
    },
    "2023": {
        "t1": "-t1n",
        "t1ce": "-t1c",
        "t2": "-t2w",
        "flair": "-t2f",
        "seg": "-seg",
    },
}
"""File-name suffix of each modality (and the segmentation) per naming."""

LABEL_CODES: dict[Naming, dict[int, int]] = {
    "2021": {0: 0, 1: 1, 2: 2, 4: 3},
    "2023": {0: 0, 1: 1, 2: 2, 3: 3},
}
"""Stored label value -> canonical label (1 NETC, 2 SNFH / oedema, 3 ET)."""

NETC, SNFH, ET_LABEL = 1, 2, 3
REGIONS: dict[str, tuple[int, ...]] = {
    "et": (ET_LABEL,),
    "tc": (NETC, ET_LABEL),
    "wt": (NETC, SNFH, ET_LABEL),
}
"""BraTS evaluation regions as unions of canonical labels."""

_EXTENSIONS = (".nii.gz", ".nii")


class BratsFormatError(ValueError):
    """A BraTS case folder is malformed (shapes disagree, unknown labels)."""


@dataclass(frozen=True)
class BratsCase:
    """A reference to one case folder on disk; :meth:`load` reads it."""

    case_id: str
    folder: Path
    naming: Naming

    def path(self, kind: str) -> Path:
        """File of ``kind`` (canonical modality or ``seg``), .nii.gz or .nii."""
        stem = f"{self.case_id}{SUFFIXES[self.naming][kind]}"
        for ext in _EXTENSIONS:
            candidate = self.folder / f"{stem}{ext}"
            if candidate.is_file():
                return candidate
        return self.folder / f"{stem}.nii.gz"

    def load(self, require_seg: bool = True) -> BratsVolume:
        """Read all modalities (and the segmentation); see :func:`load_case`."""
        return load_case(self, require_seg=require_seg)


@dataclass
class BratsVolume:
    """One loaded case: float32 volumes per canonical modality, canonical labels."""

    case_id: str
    images: dict[str, np.ndarray]
    labels: np.ndarray | None
    spacing: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(next(iter(self.images.values())).shape)  # type: ignore[return-value]

    def brain_mask(self) -> np.ndarray:
        """Voxels where any modality is non-zero (BraTS images are skull-stripped)."""
        return np.any(np.stack([v != 0 for v in self.images.values()]), axis=0)


def detect_naming(folder: Path) -> Naming:
    """Which naming the case folder uses, judged from its FLAIR file."""
    case_id = folder.name
    for naming in ("2021", "2023"):
        stem = f"{case_id}{SUFFIXES[naming]['flair']}"  # type: ignore[index]
        if any((folder / f"{stem}{ext}").is_file() for ext in _EXTENSIONS):
            return naming  # type: ignore[return-value]
    expected = " or ".join(
        f"{case_id}{SUFFIXES[n]['flair']}.nii.gz"
        for n in ("2021", "2023")  # type: ignore[index]
    )
    raise FileNotFoundError(
        f"case {case_id}: no FLAIR volume in {folder}; expected {expected} "
        "(BraTS 2021 or BraTS 2023/Africa naming, case folder named like the files)"
    )


def find_cases(folder: str | Path) -> list[BratsCase]:
    """Every case folder directly under ``folder``, sorted by case id."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(
            f"BraTS folder {root} does not exist: put one sub-folder per case there "
            "(or write phantoms with 'fedmed data synth brats --out DIR')"
        )
    cases = [
        BratsCase(case_id=sub.name, folder=sub, naming=detect_naming(sub))
        for sub in sorted(root.iterdir())
        if sub.is_dir() and not sub.name.startswith(".")
    ]
    if not cases:
        raise FileNotFoundError(
            f"no BraTS case folders in {root}: expected <case>/<case>_flair.nii.gz "
            "or <case>/<case>-t2f.nii.gz"
        )
    return cases


def _read(case: BratsCase, kind: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    path = case.path(kind)
    if not path.is_file():
        raise FileNotFoundError(
            f"case {case.case_id}: missing {kind} volume {path}; every case folder "
            f"needs {', '.join(case.path(k).name for k in (*MODALITIES, 'seg'))}"
        )
    image = nib.load(str(path))
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    if kind == "seg":
        return np.asanyarray(image.dataobj), zooms  # type: ignore[return-value]
    return image.get_fdata(dtype=np.float32), zooms  # type: ignore[return-value]


def canonical_labels(raw: np.ndarray, case: BratsCase) -> np.ndarray:
    """Map stored label values to canonical 0/1/2/3; unknown values raise."""
    codes = LABEL_CODES[case.naming]
    rounded = np.rint(raw).astype(np.int64)
    if not np.array_equal(rounded, raw):
        raise BratsFormatError(
            f"case {case.case_id}: {case.path('seg').name} holds non-integer labels; "
            f"expected the integers {sorted(codes)}"
        )
    found = {int(v) for v in np.unique(rounded)}
    unknown = sorted(found - set(codes))
    if unknown:
        raise BratsFormatError(
            f"case {case.case_id}: {case.path('seg').name} has unknown label(s) "
            f"{unknown}; BraTS {case.naming} naming allows {sorted(codes)} "
            "(2021 files use 4 for enhancing tumour, 2023/Africa files use 3)"
        )
    lut = np.zeros(max(codes) + 1, dtype=np.uint8)
    for stored, canonical in codes.items():
        lut[stored] = canonical
    return lut[rounded]


def load_case(case: BratsCase, require_seg: bool = True) -> BratsVolume:
    """Read a case with shape and label checks whose errors name the case and file."""
    images: dict[str, np.ndarray] = {}
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    for modality in MODALITIES:
        volume, zooms = _read(case, modality)
        if images:
            _check_shape(
                case, modality, volume.shape, next(iter(images.values())).shape
            )
        else:
            spacing = zooms
        images[modality] = volume
    labels = None
    if require_seg or case.path("seg").is_file():
        raw, _ = _read(case, "seg")
        _check_shape(case, "seg", raw.shape, images[MODALITIES[0]].shape)
        labels = canonical_labels(np.asarray(raw), case)
    return BratsVolume(case.case_id, images, labels, spacing)


def _check_shape(case: BratsCase, kind: str, found: tuple, expected: tuple) -> None:
    if tuple(found) != tuple(expected):
        raise BratsFormatError(
            f"case {case.case_id}: {case.path(kind).name} has shape {tuple(found)}, "
            f"expected {tuple(expected)} like {case.path(MODALITIES[0]).name}; "
            "all modalities and the segmentation must be co-registered on one grid"
        )


def region_masks(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean ET / TC / WT masks from canonical labels (BraTS evaluation regions)."""
    return {name: np.isin(labels, codes) for name, codes in REGIONS.items()}


def stored_labels(canonical: np.ndarray, naming: Naming) -> np.ndarray:
    """Inverse of :func:`canonical_labels`: canonical 0..3 to the naming's codes."""
    inverse: Mapping[int, int] = {c: s for s, c in LABEL_CODES[naming].items()}
    lut = np.array([inverse[c] for c in range(4)], dtype=np.uint8)
    return lut[canonical.astype(np.int64)]
