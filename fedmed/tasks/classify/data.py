"""This task's view of a site's data: MedMNIST-format images as tensors."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from fedmed.data.medmnist_npz import load_split
from fedmed.data.partition import partition
from fedmed.data.sites import SiteLocation


class ImageArrayDataset(Dataset):
    """uint8 ``(N, S, S, 3)`` images + int labels -> normalised CHW float tensors."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(np.ascontiguousarray(self.images[index]))
        image = image.permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        return image, int(self.labels[index])


def load_site_splits(
    location: SiteLocation,
    flag: str,
    size: int,
    partitioner: str,
    alpha: float,
    seed: int,
) -> dict[str, ImageArrayDataset]:
    """Read train/val/test for one site, partitioning a shared file if needed."""
    splits = {}
    for split in ("train", "val", "test"):
        images, labels = load_split(location.folder, flag, size, split)
        if location.partition is not None:
            parts = partition(
                partitioner, labels, location.num_partitions or 1, alpha, seed
            )
            keep = parts[location.partition]
            images, labels = images[keep], labels[keep]
        splits[split] = ImageArrayDataset(images, labels)
    return splits
