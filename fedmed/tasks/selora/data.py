"""The SeLoRA task's view of a site: report-conditioned chest X-ray splits.

A site folder holds IU X-ray files (``indiana_reports.csv`` ...) or a
Montgomery CXR release; the task reads the configured one, keeps the paper's
projection (frontal) and splits it (80/16/4 or 80/20) with the run seed.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset, Subset

from fedmed.data.cxr_reports import (
    ReportImage,
    ReportImageDataset,
    load_iu_xray,
    load_montgomery,
    split_pairs,
)
from fedmed.tasks.base import SiteData
from fedmed.tasks.selora.config import SeLoRAConfig


def load_pairs(folder: Path, cfg: SeLoRAConfig) -> list[ReportImage]:
    """Image / report pairs of one folder in the configured dataset's layout."""
    if cfg.dataset == "montgomery":
        return load_montgomery(folder)
    return load_iu_xray(folder, projection=cfg.projection)


def site_splits(
    folder: Path,
    cfg: SeLoRAConfig,
    site_id: int,
    seed: int,
    partition: int | None = None,
    num_partitions: int | None = None,
) -> SiteData:
    """Train / val / test of one site; a shared folder is cut into equal shards."""
    pairs = load_pairs(folder, cfg)
    if partition is not None and num_partitions:
        pairs = pairs[partition::num_partitions]
    if len(pairs) < 2:
        raise ValueError(
            f"site {site_id} has {len(pairs)} image/report pair(s) in {folder}; "
            "need at least 2 for a train and a test split"
        )
    train, val, test = split_pairs(pairs, cfg.split_fractions, seed + site_id)
    if not test:
        test = train[-1:]
    return SiteData(
        site_id=site_id,
        train=ReportImageDataset(train, cfg.resolution),
        test=ReportImageDataset(test, cfg.resolution),
        val=ReportImageDataset(val, cfg.resolution) if val else None,
    )


def limit(dataset: Dataset, count: int) -> Dataset:
    """The first ``count`` items (all when ``count`` is 0)."""
    if not count or count >= len(dataset):  # type: ignore[arg-type]
        return dataset
    return Subset(dataset, range(count))
