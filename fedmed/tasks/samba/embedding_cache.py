"""On-disk cache of SAM image embeddings: the frozen encoder runs once per slice.

SAMBA (like MedSAM v0, which its code descends from) never runs the image
encoder while training: embeddings of every prompted slice are computed once
and the decoder trains on them. Here each embedding is one fp16 safetensors
file under the site's cache folder::

    <cache-root>/<encoder hash>/<case>/<modality>/<view><index>-<slice hash>.safetensors

The encoder fingerprint hashes the architecture description and every image
encoder tensor; the slice hash covers the exact uint8 slice fed to SAM. A
changed checkpoint or changed data therefore never reuses a stale file, and
a new process (each Flower message may be one) finds the work already done.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress
from safetensors.torch import load_file, save_file
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from torch import Tensor

logger = logging.getLogger(__name__)

CACHE_FORMAT = "samba-embeddings-v1"
CACHE_DIR_NAME = ".samba-cache"
_TENSOR = "embedding"


@dataclass(frozen=True)
class SliceKey:
    """Identity of one 2D slice of one modality of one case."""

    case_id: str
    modality: str
    view: str
    index: int


@dataclass(frozen=True)
class EmbeddingRequest:
    """A slice whose embedding is needed, the folder it is cached in and its pixels."""

    root: Path
    key: SliceKey
    image: np.ndarray


def encoder_fingerprint(sam: Sam, description: str) -> str:
    """Hash of the image encoder's weights, input size and pixel normalisation."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{CACHE_FORMAT}|{description}|{sam.image_encoder.img_size}".encode())
    for buffer in (sam.pixel_mean, sam.pixel_std):
        digest.update(buffer.detach().cpu().numpy().tobytes())
    for name, tensor in sorted(sam.image_encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def sam_input(sam: Sam, image: np.ndarray) -> Tensor:
    """SAM's encoder input for a uint8 slice: grey to RGB, ResizeLongestSide, pad.

    The slice keeps its aspect ratio (longest side to the encoder size, then
    zero-padded bottom/right by ``Sam.preprocess``), so a box mapped with the
    same ``ResizeLongestSide`` lands on the same pixels (the authors stretched
    x/y views to a square but scaled boxes by the longest side, see the notes).
    """
    rgb = np.repeat(image[:, :, None], 3, axis=2)
    resized = ResizeLongestSide(sam.image_encoder.img_size).apply_image(rgb)
    pixels = torch.as_tensor(resized, dtype=torch.float32).permute(2, 0, 1)
    return sam.preprocess(pixels.to(sam.device))


def encode_live(sam: Sam, images: Sequence[np.ndarray]) -> Tensor:
    """Run the frozen image encoder on uint8 slices: ``(B, C, h, w)`` float32."""
    with torch.no_grad():
        batch = torch.stack([sam_input(sam, image) for image in images])
        return sam.image_encoder(batch)


class EmbeddingCache:
    """Computes missing embeddings in batches and serves cached ones from disk."""

    def __init__(self, sam: Sam, description: str, batch_size: int = 4) -> None:
        self.sam = sam
        self.fingerprint = encoder_fingerprint(sam, description)
        self.batch_size = batch_size

    def path(self, request: EmbeddingRequest) -> Path:
        """Where the embedding of ``request`` lives (whether or not it exists yet)."""
        key = request.key
        pixels = np.ascontiguousarray(request.image)
        content = hashlib.blake2b(pixels.tobytes(), digest_size=8)
        content.update(str(pixels.shape).encode())
        name = f"{key.view}{key.index:03d}-{content.hexdigest()}.safetensors"
        return request.root / self.fingerprint[:16] / key.case_id / key.modality / name

    def ensure(self, requests: Sequence[EmbeddingRequest]) -> list[Path]:
        """Paths of all requested embeddings, computing the missing ones first."""
        paths = [self.path(r) for r in requests]
        missing = [
            (r, p) for r, p in zip(requests, paths, strict=True) if not p.is_file()
        ]
        if missing:
            self._compute(missing)
        return paths

    def _compute(self, missing: list[tuple[EmbeddingRequest, Path]]) -> None:
        logger.info(
            "encoding %d slices with the frozen SAM image encoder", len(missing)
        )
        with Progress(transient=True, disable=len(missing) < 64) as progress:
            task = progress.add_task("SAM image embeddings", total=len(missing))
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                embeddings = encode_live(self.sam, [r.image for r, _ in chunk])
                for (request, _), embedding in zip(chunk, embeddings, strict=True):
                    self.store(request, embedding)
                progress.advance(task, len(chunk))

    def store(self, request: EmbeddingRequest, embedding: Tensor) -> Path:
        """Write one embedding (fp16) atomically; returns its path."""
        path = self.path(request)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({_TENSOR: embedding.detach().half().cpu().contiguous()}, str(tmp))
        tmp.replace(path)
        return path

    @staticmethod
    def load(paths: Sequence[Path], device: torch.device | str = "cpu") -> Tensor:
        """Stack cached embeddings as float32 ``(B, C, h, w)`` on ``device``."""
        tensors = [load_file(str(p))[_TENSOR] for p in paths]
        return torch.stack(tensors).to(device=device, dtype=torch.float32)
