"""FPT's view of a site's images: asymmetric inputs and preloaded K/V.

Each sample is a dict of the model's keyword inputs plus ``label``:
``side_image`` (low resolution, augmented when training, FPT §2.5: only the
side input is augmented), ``keys`` / ``values`` (from the K/V cache) or
``high_image`` (high resolution, never augmented for FPT; the baselines'
only input, augmented when training).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from fedmed.data.image_folder import (
    ImageRecord,
    LabelsLayout,
    assign_splits,
    load_rgb,
    read_image_folder,
)
from fedmed.data.partition import iid
from fedmed.data.sites import SiteLocation
from fedmed.tasks.fpt.config import FptConfig
from fedmed.tasks.fpt.kv_cache import KVCache

SIDE = "side_image"
HIGH = "high_image"
CACHED = "cached_kv"


@dataclass(frozen=True)
class Normalisation:
    """Per-channel mean and std of the frozen model's pre-training."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


def eval_transform(size: int, norm: Normalisation) -> v2.Transform:
    """Resize (anti-aliased) and normalise."""
    return v2.Compose(
        [v2.Resize((size, size), antialias=True), v2.Normalize(norm.mean, norm.std)]
    )


def train_transform(size: int, norm: Normalisation) -> v2.Transform:
    """The authors' augmentation (crop, flips, rotation, jitter, grey, blur)."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(
                size, scale=(0.8, 1.0), ratio=(0.7, 1.3), antialias=True
            ),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomAffine(degrees=30, translate=(0.2, 0.2)),
            v2.ColorJitter(brightness=0.2, contrast=0.2),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(7, sigma=0.1)], p=0.2),
            v2.Normalize(norm.mean, norm.std),
        ]
    )


class FptImageDataset(Dataset):
    """One split of a site: labelled images turned into the model's inputs.

    ``inputs`` names what each sample carries: any of ``side_image``,
    ``high_image`` and ``cached_kv`` (which needs ``cache``).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        inputs: frozenset[str],
        transforms: dict[str, v2.Transform],
        cache: KVCache | None = None,
    ) -> None:
        if CACHED in inputs and (cache is None or len(cache) != len(records)):
            raise ValueError(
                "cached_kv input needs a K/V cache with one entry per image"
            )
        self.records = list(records)
        self.inputs = inputs
        self.transforms = transforms
        self.cache = cache

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Tensor | int]:
        record = self.records[index]
        image = load_rgb(record.path)
        sample: dict[str, Tensor | int] = {"label": record.label}
        for name in (SIDE, HIGH):
            if name in self.inputs:
                sample[name] = self.transforms[name](image)
        if CACHED in self.inputs:
            sample["keys"], sample["values"] = self.cache[index]
        return sample


def method_inputs(cfg: FptConfig) -> frozenset[str]:
    """What the configured method consumes."""
    if cfg.method != "fpt":
        return frozenset({HIGH})
    return frozenset({SIDE, CACHED} if cfg.preload else {SIDE, HIGH})


def split_transforms(
    cfg: FptConfig, norm: Normalisation, train: bool
) -> dict[str, v2.Transform]:
    """Side input augmented when training; FPT's high-res input never is."""
    augment = train and cfg.augment
    side = train_transform if augment else eval_transform
    high = train_transform if augment and cfg.method != "fpt" else eval_transform
    return {SIDE: side(cfg.low_res, norm), HIGH: high(cfg.high_res, norm)}


def layout(cfg: FptConfig) -> LabelsLayout:
    """The labels-CSV layout named by the run config."""
    return LabelsLayout(
        labels_csv=cfg.labels_csv,
        image_dir=cfg.image_dir,
        image_column=cfg.image_column,
        label_column=cfg.label_column,
        split_column=cfg.split_column,
    )


def site_records(
    cfg: FptConfig, location: SiteLocation, seed: int
) -> dict[str, list[ImageRecord]]:
    """The site's records per split (a partition of a shared folder if so located)."""
    records = read_image_folder(location.folder, layout(cfg), cfg.class_list())
    _check_labels(records, cfg.num_classes, location.folder)
    records = assign_splits(records, seed)
    if location.partition is not None:
        parts = iid(len(records), location.num_partitions or 1, seed)
        records = [records[i] for i in parts[location.partition]]
    return {s: [r for r in records if r.split == s] for s in ("train", "val", "test")}


def heldout_records(cfg: FptConfig, folder: Path) -> list[ImageRecord]:
    """Every record of the held-out folder, all evaluated."""
    records = read_image_folder(folder, layout(cfg), cfg.class_list())
    _check_labels(records, cfg.num_classes, folder)
    return records


def _check_labels(
    records: Sequence[ImageRecord], num_classes: int, where: Path
) -> None:
    bad = sorted({r.label for r in records if not 0 <= r.label < num_classes})
    if bad:
        raise ValueError(
            f"{where}: labels {bad} are outside 0..{num_classes - 1}; "
            "set fpt.num-classes to the number of classes"
        )
