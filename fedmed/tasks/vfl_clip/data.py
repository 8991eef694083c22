"""Image providers' data: DermaMNIST images -> frozen CLIP embeddings, cached on disk.

An image provider embeds its images once with the frozen image tower
(batched, with a progress bar) and keeps only L2-normalised embeddings and
labels; neither ever leaves the site. Flower may start a fresh process per
message, so the embeddings are cached in ``<site folder>/.cache/vfl_clip/``
(or ``vfl-clip.cache-dir``) under a key hashing the encoder identity (model,
checkpoint path/size/mtime, image size, QuickGELU, init seed) and the exact
image bytes; a changed checkpoint or dataset gives a new key.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from fedmed.data.medmnist_npz import load_split
from fedmed.data.partition import partition
from fedmed.data.sites import SiteLocation
from fedmed.tasks.vfl_clip.config import VflClipConfig
from fedmed.tasks.vfl_clip.model import ImageEncoder

logger = logging.getLogger(__name__)
CACHE_SUBDIR = Path(".cache") / "vfl_clip"
CACHE_FORMAT = 1


@dataclass(frozen=True)
class EmbeddedSplit:
    """One split of a site: normalised embeddings (N x d, float32) and labels.

    ``parts`` are the sample counts of the sites pooled into this split, in
    order (empty: one site), so a pooled baseline draws each round's batch
    per site exactly as the image providers do.
    """

    embeddings: np.ndarray
    labels: np.ndarray
    parts: tuple[int, ...] = ()

    @property
    def part_sizes(self) -> tuple[int, ...]:
        """Sample counts of the pooled sites (one entry for a single site)."""
        return self.parts or (len(self.labels),)

    def __len__(self) -> int:
        return len(self.labels)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.embeddings), torch.from_numpy(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.embeddings[index]), int(self.labels[index])

    @classmethod
    def concatenate(cls, splits: list[EmbeddedSplit]) -> EmbeddedSplit:
        """Several sites' splits as one (pooled baseline)."""
        return cls(
            np.concatenate([s.embeddings for s in splits]),
            np.concatenate([s.labels for s in splits]),
            tuple(size for s in splits for size in s.part_sizes),
        )


def encoder_identity(cfg: VflClipConfig, seed: int) -> dict:
    """What determines the embeddings besides the images (part of the cache key)."""
    identity = {
        "format": CACHE_FORMAT,
        "model": cfg.model,
        "image_size": cfg.image_size,
        "quick_gelu": cfg.quick_gelu,
    }
    if cfg.checkpoint:
        stat = Path(cfg.checkpoint).stat()
        identity["checkpoint"] = [str(Path(cfg.checkpoint).resolve()), stat.st_size]
        identity["checkpoint_mtime_ns"] = stat.st_mtime_ns
    else:
        identity["random_init_seed"] = seed
    return identity


def cache_key(identity: dict, images: np.ndarray) -> str:
    """SHA-256 of the encoder identity and the image array (shape, dtype, bytes)."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    digest.update(f"{images.shape}{images.dtype}".encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()[:32]


def embed_images(
    encoder: ImageEncoder, images: np.ndarray, batch_size: int, description: str
) -> np.ndarray:
    """Normalised embeddings of uint8 images, batched, with a progress bar."""
    chunks = []
    with Progress(transient=True) as progress:
        job = progress.add_task(description, total=len(images))
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(
                np.ascontiguousarray(images[start : start + batch_size])
            )
            chunks.append(encoder(batch).float().numpy())
            progress.advance(job, len(batch))
    width = int(chunks[0].shape[1]) if chunks else 0
    return np.concatenate(chunks) if chunks else np.zeros((0, width), np.float32)


def cached_embeddings(
    encoder_factory,
    identity: dict,
    images: np.ndarray,
    labels: np.ndarray,
    cache_dir: Path,
    batch_size: int,
) -> EmbeddedSplit:
    """Embeddings of ``images`` from the cache, computing (and storing) them once.

    ``encoder_factory`` builds the image encoder only on a cache miss, so a
    warm site never loads the image tower.
    """
    path = Path(cache_dir) / f"{cache_key(identity, images)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            return EmbeddedSplit(
                stored["embeddings"], stored["labels"].astype(np.int64)
            )
    encoder = encoder_factory()
    embeddings = embed_images(
        encoder, images, batch_size, f"embedding {len(images)} images"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp.npz")
    np.savez(partial, embeddings=embeddings, labels=np.asarray(labels, np.int64))
    partial.replace(path)
    logger.info("cached %d embeddings in %s", len(images), path)
    return EmbeddedSplit(embeddings.astype(np.float32), np.asarray(labels, np.int64))


def site_images(
    location: SiteLocation,
    cfg: VflClipConfig,
    split: str,
    partitioner: str,
    alpha: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One split of a site's images, partitioning a shared file when needed."""
    images, labels = load_split(location.folder, cfg.dataset, cfg.data_size, split)
    if location.partition is not None:
        parts = partition(
            partitioner, labels, location.num_partitions or 1, alpha, seed
        )
        keep = parts[location.partition]
        images, labels = images[keep], labels[keep]
    return images, labels


def cache_folder(cfg: VflClipConfig, location: SiteLocation) -> Path:
    """Where this site's embedding cache lives."""
    return Path(cfg.cache_dir) if cfg.cache_dir else location.folder / CACHE_SUBDIR
