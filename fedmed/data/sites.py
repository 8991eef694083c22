"""Where a site's data lives, in simulation and in a deployment.

Three layouts are supported, checked in this order:

1. ``node_config["data-dir"]`` (deployment): the folder mounted at that site
   holds that site's files; nothing is partitioned.
2. ``<data-dir>/site_<partition-id>/`` (simulation over data written per site,
   e.g. by ``fedmed data synth`` with per-site shift).
3. ``<data-dir>/`` holding one dataset (e.g. the official MedMNIST npz), which
   is partitioned across ``num-partitions`` sites by a partitioner.

``<data-dir>/heldout/`` (if present) is the global held-out test set that the
server evaluates the aggregate on in simulation.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fedmed.config import FlatConfig

SITE_DIR_PREFIX = "site_"
HELDOUT_DIR = "heldout"
SYNTHETIC_MARKER = "SYNTHETIC.json"
"""Written by every synthetic generator: a run reading the folder says so."""


@dataclass(frozen=True)
class SiteLocation:
    """Resolved location of one site's data.

    ``folder`` holds the files to read. When ``partition`` is set, the files are
    shared by all sites and this site takes partition ``partition`` of
    ``num_partitions``.
    """

    site_id: int
    folder: Path
    partition: int | None = None
    num_partitions: int | None = None


def site_dir(data_dir: Path, site_id: int) -> Path:
    """Folder of site ``site_id`` in a per-site layout."""
    return Path(data_dir) / f"{SITE_DIR_PREFIX}{site_id}"


def locate_site(data_dir: str | Path, node_config: FlatConfig) -> SiteLocation:
    """Find a site's data from its node config; errors say what to put where."""
    if "data-dir" in node_config and str(node_config["data-dir"]):
        folder = Path(str(node_config["data-dir"]))
        site_id = int(node_config.get("site-id", node_config.get("partition-id", 0)))
        if not folder.is_dir():
            raise FileNotFoundError(
                f"node config data-dir {folder} does not exist: mount this site's "
                "data folder there (see the deployment guide)"
            )
        return SiteLocation(site_id=site_id, folder=folder)
    if "partition-id" not in node_config:
        raise KeyError(
            "node config has neither 'data-dir' (deployment) nor 'partition-id' "
            "(simulation); set one of them"
        )
    partition = int(node_config["partition-id"])
    num_partitions = int(node_config.get("num-partitions", 1))
    root = Path(data_dir)
    per_site = site_dir(root, partition)
    if per_site.is_dir():
        return SiteLocation(site_id=partition, folder=per_site)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data folder {root} does not exist: write synthetic data with "
            f"'fedmed data synth ... --out {root}' or put the real files there"
        )
    return SiteLocation(
        site_id=partition, folder=root, partition=partition, num_partitions=num_partitions
    )


def heldout_dir(data_dir: str | Path) -> Path | None:
    """The global held-out folder, or ``None`` when the layout has none."""
    folder = Path(data_dir) / HELDOUT_DIR
    return folder if folder.is_dir() else None


def is_synthetic(data_dir: str | Path) -> bool:
    """Whether ``data_dir`` was written by a synthetic generator."""
    return (Path(data_dir) / SYNTHETIC_MARKER).is_file()


@contextmanager
def writing_synthetic(out: str | Path, kind: str) -> Iterator[Path]:
    """Write synthetic data into ``out``, marked as such; all or nothing.

    A generator that fails part-way leaves no half-made folder behind when
    ``out`` did not exist before (a later run must not mistake the debris for
    data); on success ``SYNTHETIC.json`` marks the folder, so every run on it
    records that its data is synthetic.
    """
    out = Path(out)
    existed = out.exists()
    try:
        yield out
    except BaseException:
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
        raise
    out.mkdir(parents=True, exist_ok=True)
    (out / SYNTHETIC_MARKER).write_text(json.dumps({"kind": kind}) + "\n")
