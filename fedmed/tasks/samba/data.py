"""SAMBA's view of a site: BraTS cases, split by case, cut into prompted 2D slices.

Slices follow the authors' export: every view (x, y, z) of every modality is
its own sample; each 2D slice is clipped to its own 0.5/99.5 percentiles
(computed over all pixels), min-max scaled to 0..255 and the pixels that were
0 (background of the skull-stripped scan) are set back to 0. Which slices
carry a prompt is explicit: with tumour boxes only slices containing tumour
(the rest are predicted empty); with brain boxes every slice containing brain.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from fedmed.data.brats import BratsCase, BratsVolume, find_cases
from fedmed.tasks.samba.config import SambaConfig
from fedmed.tasks.samba.embedding_cache import (
    CACHE_DIR_NAME,
    EmbeddingCache,
    EmbeddingRequest,
    SliceKey,
)
from fedmed.tasks.samba.prompts import mask_extent

logger = logging.getLogger(__name__)

VIEW_AXIS = {"x": 0, "y": 1, "z": 2}


class CaseDataset(Dataset):
    """A list of BraTS case references; items are :class:`BratsCase` (loaded lazily)."""

    def __init__(self, cases: Sequence[BratsCase]) -> None:
        self.cases = list(cases)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> BratsCase:
        return self.cases[index]


def cases_of(dataset: Dataset | None) -> list[BratsCase]:
    """Case references of a :class:`CaseDataset` or a ConcatDataset of them."""
    if dataset is None:
        return []
    return [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]


def split_cases(
    cases: Sequence[BratsCase], test_fraction: float, val_fraction: float
) -> tuple[list[BratsCase], list[BratsCase], list[BratsCase]]:
    """(train, val, test) by case, in sorted order like the authors' split.

    At least one test case whenever there are two or more cases; validation
    (early stopping of the voting net) may be empty for tiny sites.
    """
    cases = sorted(cases, key=lambda c: c.case_id)
    n_test = max(1, round(len(cases) * test_fraction)) if len(cases) > 1 else 0
    rest, test = cases[: len(cases) - n_test], cases[len(cases) - n_test :]
    n_val = round(len(rest) * val_fraction) if len(rest) > 1 else 0
    return rest[: len(rest) - n_val], rest[len(rest) - n_val :], test


def site_cases(folder: Path, partition: int | None, num_partitions: int | None):
    """Cases of a site folder, or partition ``partition`` of a shared folder."""
    cases = find_cases(folder)
    if partition is None:
        return cases
    return cases[partition :: max(int(num_partitions or 1), 1)]


def take_slice(volume: np.ndarray, view: str, index: int) -> np.ndarray:
    """2D slice ``index`` along ``view``: x -> (Y, Z), y -> (X, Z), z -> (X, Y)."""
    return np.take(volume, index, axis=VIEW_AXIS[view])


def num_slices(shape: Sequence[int], view: str) -> int:
    return int(shape[VIEW_AXIS[view]])


def put_slice(volume: np.ndarray, view: str, index: int, values: np.ndarray) -> None:
    """Write a 2D slice (or ``(k, H, W)``) back into a ``(k, X, Y, Z)`` volume."""
    target = [slice(None)] * volume.ndim
    target[volume.ndim - 3 + VIEW_AXIS[view]] = index
    volume[tuple(target)] = values


def normalise_slice(raw: np.ndarray) -> np.ndarray:
    """Authors' per-slice intensity pipeline: 0.5/99.5 clip, 0..255, background 0."""
    low, high = np.percentile(raw, (0.5, 99.5))
    clipped = np.clip(raw, low, high)
    span = float(clipped.max() - clipped.min()) or 1.0
    scaled = (clipped - clipped.min()) / span * 255.0
    scaled[raw == 0] = 0
    return np.rint(scaled).astype(np.uint8)


def prompted_indices(volume: BratsVolume, view: str, prompt: str) -> list[int]:
    """Slices that get a box: tumour present (tumour mode) or brain present (brain)."""
    source = volume.labels > 0 if prompt == "tumour" else volume.brain_mask()
    axes = tuple(a for a in range(3) if a != VIEW_AXIS[view])
    return [int(i) for i in np.flatnonzero(source.any(axis=axes))]


def cache_root(cfg: SambaConfig, case: BratsCase) -> Path:
    """Embedding cache folder: ``samba.cache-dir`` or ``<site folder>/.samba-cache``."""
    return Path(cfg.cache_dir) if cfg.cache_dir else case.folder.parent / CACHE_DIR_NAME


@dataclass
class SliceSample:
    """One decoder sample: a cached embedding and the slice's labels (+ brain box)."""

    key: SliceKey
    embedding: Path
    labels: np.ndarray
    brain_box: np.ndarray | None


def embedding_requests(
    case: BratsCase,
    volume: BratsVolume,
    cfg: SambaConfig,
    slices: Iterable[tuple[str, int]],
    modalities: Sequence[str] | None = None,
) -> list[EmbeddingRequest]:
    """One request per (view, index) in ``slices`` and per modality (default: all)."""
    root = cache_root(cfg, case)
    requests = []
    for view, index in slices:
        for modality in modalities or cfg.modality_list:
            image = normalise_slice(take_slice(volume.images[modality], view, index))
            key = SliceKey(case.case_id, modality, view, index)
            requests.append(EmbeddingRequest(root, key, image))
    return requests


def case_samples(
    case: BratsCase, volume: BratsVolume, cfg: SambaConfig, cache: EmbeddingCache
) -> list[SliceSample]:
    """Decoder samples of one case: every prompted slice of every view and modality."""
    slices = [
        (view, index)
        for view in cfg.view_list
        for index in prompted_indices(volume, view, cfg.prompt)
    ]
    requests = embedding_requests(case, volume, cfg, slices)
    paths = cache.ensure(requests)
    brain = volume.brain_mask()
    per_slice = {  # shared by the modalities of one slice
        (view, index): (
            take_slice(volume.labels, view, index).astype(np.uint8),
            mask_extent(take_slice(brain, view, index)),
        )
        for view, index in slices
    }
    return [
        SliceSample(r.key, path, *per_slice[(r.key.view, r.key.index)])
        for r, path in zip(requests, paths, strict=True)
    ]


def training_samples(
    cases: Sequence[BratsCase], cfg: SambaConfig, cache: EmbeddingCache
) -> list[SliceSample]:
    """Decoder samples of all cases (embeddings computed on first use, then cached)."""
    samples: list[SliceSample] = []
    for case in cases:
        samples.extend(case_samples(case, case.load(), cfg, cache))
    logger.info("%d decoder samples from %d cases", len(samples), len(cases))
    return samples
