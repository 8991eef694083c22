"""From a case to SAM mask volumes and a 3-label segmentation (SAMBA Fig. 3).

Each prompted slice of each view and modality is segmented by SAM from its
cached embedding; the slice masks are stacked back into one volume per
(modality, view). The volumes are fused into the BraTS labels either by the
voting network (SAMBA Sec. 2.4) or, without it, by a majority vote across
modalities and views (binary SAMBA then yields the whole tumour only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fedmed.data.brats import BratsCase, BratsVolume, region_masks
from fedmed.tasks.samba.config import SambaConfig
from fedmed.tasks.samba.data import (
    embedding_requests,
    normalise_slice,
    num_slices,
    prompted_indices,
    put_slice,
    take_slice,
)
from fedmed.tasks.samba.embedding_cache import EmbeddingCache
from fedmed.tasks.samba.model import SambaModel
from fedmed.tasks.samba.prompts import (
    input_size,
    jittered_box,
    mask_extent,
    to_input_frame,
)
from fedmed.tasks.samba.train import decode
from fedmed.tasks.samba.voting import (
    PAINT_ORDER,
    predict_labels,
    voting_input,
    voting_target,
)

Boxes = dict[tuple[str, int], np.ndarray]
MaskVolumes = dict[tuple[str, str], np.ndarray]


def reference_boxes(
    volume: BratsVolume,
    cfg: SambaConfig,
    jitter: int = 0,
    rng: np.random.Generator | None = None,
) -> Boxes:
    """Boxes from the reference: tumour extent (+ jitter) or brain extent, per slice."""
    rng = rng or np.random.default_rng(0)
    brain = volume.brain_mask() if cfg.prompt == "brain" else None
    boxes: Boxes = {}
    for view in cfg.view_list:
        for index in prompted_indices(volume, view, cfg.prompt):
            if brain is not None:
                box = mask_extent(take_slice(brain, view, index))
            else:
                box = jittered_box(
                    take_slice(volume.labels, view, index) > 0, jitter, rng
                )
            if box is not None:
                boxes[(view, index)] = box
    return boxes


def yolo_boxes(
    localizer: nn.Module, volume: BratsVolume, cfg: SambaConfig
) -> tuple[Boxes, int, int]:
    """Localizer boxes for every brain slice; also (correct, total) slice detections.

    A slice detection is correct when the localizer finds a box exactly on
    the slices that contain tumour (the paper's slice-level accuracy).
    """
    from fedmed.tasks.samba.localizer import detect_boxes

    brain = volume.brain_mask()
    keys, images, truth = [], [], []
    for view in cfg.view_list:
        for index in range(num_slices(volume.shape, view)):
            if not take_slice(brain, view, index).any():
                continue
            keys.append((view, index))
            raw = take_slice(volume.images[cfg.yolo_modality], view, index)
            images.append(normalise_slice(raw))
            truth.append(bool(take_slice(volume.labels, view, index).any()))
    detected = detect_boxes(localizer, images, cfg)
    boxes = {k: b for k, b in zip(keys, detected, strict=True) if b is not None}
    correct = sum((b is not None) == t for b, t in zip(detected, truth, strict=True))
    return boxes, correct, len(keys)


def sam_volumes(
    model: SambaModel,
    decoder: nn.Module,
    case: BratsCase,
    volume: BratsVolume,
    cfg: SambaConfig,
    cache: EmbeddingCache,
    boxes: Boxes,
    pairs: Sequence[tuple[str, str]],
) -> MaskVolumes:
    """Binary SAM volumes ``(k, X, Y, Z)`` per (modality, view); unprompted: empty."""
    channels = cfg.num_mask_channels
    out = {pair: np.zeros((channels, *volume.shape), dtype=bool) for pair in pairs}
    for view in dict.fromkeys(v for _, v in pairs):
        modalities = [m for m, v in pairs if v == view]
        slices = sorted(k for k in boxes if k[0] == view)
        requests = embedding_requests(case, volume, cfg, slices, modalities)
        paths = cache.ensure(requests)
        for start in range(0, len(requests), cfg.batch_size):
            chunk = requests[start : start + cfg.batch_size]
            masks = _segment(model, decoder, cfg, paths[start : start + cfg.batch_size],
                             [boxes[(view, r.key.index)] for r in chunk],
                             chunk[0].image.shape)  # fmt: skip
            for request, mask in zip(chunk, masks, strict=True):
                key = request.key
                put_slice(out[(key.modality, view)], view, key.index, mask)
    return out


def _segment(model, decoder, cfg, paths, boxes, original_size) -> np.ndarray:
    """Binary masks ``(B, k, H, W)`` at slice resolution for one batch of one view."""
    sam = model.sam
    size = sam.image_encoder.img_size
    framed = to_input_frame(np.stack(boxes), original_size, size)
    with torch.no_grad():
        embeddings = EmbeddingCache.load(paths, sam.device)
        box_tensor = torch.as_tensor(framed, dtype=torch.float32, device=sam.device)
        logits = decode(sam, embeddings, box_tensor, cfg.variant == "mc", decoder)
        masks = sam.postprocess_masks(
            logits, input_size(original_size, size), original_size
        )
    return (masks > sam.mask_threshold).cpu().numpy()


def majority_regions(volumes: MaskVolumes, cfg: SambaConfig) -> dict[str, np.ndarray]:
    """Fuse SAM volumes by majority vote: WT only (binary) or ET/TC/WT (SAMBA-mc)."""
    votes = np.mean(np.stack(list(volumes.values())), axis=0) >= 0.5
    if cfg.variant == "binary":
        return {"wt": votes[0]}
    labels = np.zeros(votes.shape[1:], dtype=np.uint8)
    for label in PAINT_ORDER:
        labels[votes[label - 1]] = label
    return region_masks(labels)


def voting_pairs(cfg: SambaConfig) -> list[tuple[str, str]]:
    """(modality, view) SAM volumes the voting network reads, in channel order."""
    return [(m, v) for m in cfg.voting_modality_list for v in cfg.voting_view_list]


def binary_masks(volumes: MaskVolumes) -> dict[tuple[str, str], np.ndarray]:
    """One binary tumour volume per pair (SAMBA-mc: union of the three outputs)."""
    return {pair: masks.any(axis=0) for pair, masks in volumes.items()}


def voting_regions(
    model: SambaModel, volume: BratsVolume, volumes: MaskVolumes, cfg: SambaConfig
) -> dict[str, np.ndarray]:
    """ET / TC / WT from the voting network on MRIs + SAM masks."""
    inputs = voting_input(volume, binary_masks(volumes), cfg)
    device = next(model.voting.parameters()).device
    return region_masks(predict_labels(model.voting, inputs, device))


def voting_item(
    model: SambaModel,
    case: BratsCase,
    cfg: SambaConfig,
    cache: EmbeddingCache,
    rng: np.random.Generator,
    jitter: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(input, target) of one case for training the voting network.

    As in the authors' notebook, the SAM masks come from the current decoder
    prompted by reference boxes (jittered for training cases).
    """
    volume = case.load()
    boxes = reference_boxes(volume, cfg, jitter, rng)
    decoder = model.sam.mask_decoder
    pairs = voting_pairs(cfg)
    volumes = sam_volumes(model, decoder, case, volume, cfg, cache, boxes, pairs)
    return voting_input(volume, binary_masks(volumes), cfg), voting_target(
        volume.labels
    )
