"""Preloaded frozen-model K/V on disk (FPT §2.5, Fig. 4c).

The frozen model sees un-augmented images, so its per-layer keys and values
of the selected tokens are fixed per image: they are computed once, stored as
two memory-mapped ``.npy`` arrays ``(N, L, H, T, D)`` (fp16 by default, half
the authors' fp32), and training reads them instead of running the frozen
model. Each cache folder is named by a fingerprint of everything that
determines its content (frozen-model identity and checkpoint file, input
resolution, token ratio, normalisation, dtype, and every image file's path,
size and modification time), so a changed model or image set never reuses a
stale cache. A cache is written to a temporary folder and renamed into place,
so an interrupted build is never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import track
from torch import Tensor

from fedmed.data.image_folder import ImageRecord

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
NUMPY_DTYPES = {"fp16": np.float16, "fp32": np.float32}


def file_identity(path: Path) -> list[Any]:
    """Cheap identity of a file: resolved path, size, modification time (ns)."""
    stat = Path(path).stat()
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def cache_fingerprint(
    identity: Mapping[str, Any], records: Sequence[ImageRecord]
) -> str:
    """SHA-256 of the frozen-model identity and every image file's identity."""
    payload = {
        "format": CACHE_FORMAT,
        "frozen": dict(identity),
        "images": [file_identity(r.path) for r in records],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class KVCache:
    """Memory-mapped keys and values of one split, indexed like its records."""

    folder: Path
    keys: np.ndarray
    values: np.ndarray

    @classmethod
    def open(cls, folder: Path) -> KVCache:
        """Map an existing cache folder (read-only)."""
        keys = np.load(folder / "keys.npy", mmap_mode="r")
        values = np.load(folder / "values.npy", mmap_mode="r")
        return cls(Path(folder), keys, values)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        """Keys and values ``(L, H, T, D)`` of image ``index`` (stored dtype)."""
        keys = torch.from_numpy(np.array(self.keys[index]))
        return keys, torch.from_numpy(np.array(self.values[index]))

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of the key and value arrays."""
        return sum((self.folder / n).stat().st_size for n in ("keys.npy", "values.npy"))


def open_or_build_cache(
    records: Sequence[ImageRecord],
    root: Path,
    split: str,
    identity: Mapping[str, Any],
    extractor: Callable[[], Callable[[Tensor], tuple[Tensor, Tensor]]],
    load_image: Callable[[ImageRecord], Tensor],
    dtype: str = "fp16",
    batch_size: int = 8,
) -> KVCache:
    """The split's cache under ``root``, built with ``extractor()`` if missing.

    ``extractor`` is called only when the cache must be built, so a valid
    cache never costs a frozen-model build.
    """
    digest = cache_fingerprint({**identity, "dtype": dtype}, records)
    folder = Path(root) / f"{split}-{digest[:20]}"
    if (folder / "meta.json").is_file():
        cache = KVCache.open(folder)
        log.info("K/V cache hit %s (%.1f MB)", folder, cache.size_bytes / 2**20)
        return cache
    temporary = Path(root) / f".building-{folder.name}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    _write_arrays(
        temporary, records, extractor(), load_image, NUMPY_DTYPES[dtype], batch_size
    )
    meta = {"format": CACHE_FORMAT, "fingerprint": digest, "split": split}
    meta |= {"num_images": len(records), "dtype": dtype, "frozen": dict(identity)}
    _publish(temporary, folder, meta)
    cache = KVCache.open(folder)
    log.info(
        "K/V cache built %s: %d images, %.1f MB (%.2f MB per image)",
        folder,
        len(records),
        cache.size_bytes / 2**20,
        cache.size_bytes / 2**20 / max(1, len(records)),
    )
    return cache


def _publish(temporary: Path, folder: Path, meta: Mapping[str, Any]) -> None:
    """Write ``meta.json`` last and rename the finished cache into place."""
    (temporary / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    try:
        temporary.rename(folder)
    except OSError:  # another process finished the same cache first
        shutil.rmtree(temporary, ignore_errors=True)


def _write_arrays(
    folder: Path,
    records: Sequence[ImageRecord],
    extractor: Callable[[Tensor], tuple[Tensor, Tensor]],
    load_image: Callable[[ImageRecord], Tensor],
    dtype: type,
    batch_size: int,
) -> None:
    starts = range(0, len(records), batch_size)
    arrays: tuple[np.ndarray, np.ndarray] | None = None
    for start in track(starts, description="frozen K/V preload", transient=True):
        batch = records[start : start + batch_size]
        keys, values = extractor(torch.stack([load_image(r) for r in batch]))
        if arrays is None:
            shape = (len(records), *keys.shape[1:])
            arrays = tuple(
                np.lib.format.open_memmap(
                    folder / n, mode="w+", dtype=dtype, shape=shape
                )
                for n in ("keys.npy", "values.npy")
            )
        arrays[0][start : start + len(batch)] = keys.float().numpy().astype(dtype)
        arrays[1][start : start + len(batch)] = values.float().numpy().astype(dtype)
    if arrays is None:
        raise ValueError(f"no images to preload into {folder}; the split is empty")
    for array in arrays:
        array.flush()
