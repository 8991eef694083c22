"""MedMNIST npz files, read through the ``medmnist`` package's own dataset classes.

The official files (``dermamnist.npz``, ``dermamnist_64.npz``, ...) hold
``{train,val,test}_{images,labels}`` arrays: uint8 images ``(N, S, S[, 3])``
and integer labels ``(N, 1)``. medmnist's ``__len__`` asserts the official
sample counts, so fedmed reads the arrays off the dataset object instead of
iterating it; that lets the same code read synthetic files and partitions.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import medmnist
import numpy as np
from medmnist.info import INFO

SPLITS = ("train", "val", "test")
SIZES = (28, 64, 128, 224)


def npz_name(flag: str, size: int) -> str:
    """File name medmnist uses for ``flag`` at ``size`` (no suffix at 28 px)."""
    if size not in SIZES:
        raise ValueError(f"MedMNIST size must be one of {SIZES}, found {size}")
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def dataset_class(flag: str) -> type:
    """The medmnist dataset class for ``flag`` (e.g. DermaMNIST for 'dermamnist')."""
    if flag not in INFO:
        raise ValueError(f"unknown MedMNIST flag {flag!r}; known: {', '.join(INFO)}")
    return getattr(medmnist, INFO[flag]["python_class"])


def class_names(flag: str) -> list[str]:
    """Human-readable label names, in label order."""
    labels = INFO[flag]["label"]
    return [labels[str(i)] for i in range(len(labels))]


def load_split(
    folder: str | Path, flag: str = "dermamnist", size: int = 28, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split as ``(images uint8 (N,S,S,C), labels int64 (N,))``.

    Raises ``FileNotFoundError`` naming the expected file when it is absent.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, found {split!r}")
    folder = Path(folder)
    path = folder / npz_name(flag, size)
    if not path.is_file():
        raise FileNotFoundError(
            f"MedMNIST file {path.name} not found in {folder}: download it from the "
            f"MedMNIST release (Zenodo) and place it there, or write synthetic data "
            f"with 'fedmed data synth {flag} --out {folder}'"
        )
    try:
        dataset = dataset_class(flag)(
            split=split, root=str(folder), download=False, size=size
        )
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as err:
        raise ValueError(
            f"{path} is not a readable MedMNIST npz ({type(err).__name__}: {err}): "
            f"it is truncated or corrupt, or lacks the {split}_images / "
            f"{split}_labels arrays; copy it again from its source"
        ) from None
    images = np.asarray(dataset.imgs)
    labels = np.asarray(dataset.labels).reshape(-1).astype(np.int64)
    if images.dtype != np.uint8 or len(images) != len(labels):
        raise ValueError(
            f"{path}: {split} images must be uint8 with one label each, found "
            f"{images.dtype} images {images.shape} and labels {labels.shape}"
        )
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    return images, labels


def save_npz(
    folder: str | Path,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    flag: str = "dermamnist",
    size: int = 28,
) -> Path:
    """Write splits in medmnist's exact npz layout (labels as ``(N, 1)`` uint8)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for split, (images, labels) in splits.items():
        arrays[f"{split}_images"] = np.ascontiguousarray(images, dtype=np.uint8)
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.uint8).reshape(-1, 1)
    path = folder / npz_name(flag, size)
    np.savez_compressed(path, **arrays)
    return path
