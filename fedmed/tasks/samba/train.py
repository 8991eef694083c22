"""Local SAMBA training: the mask decoder on cached embeddings (pure torch).

SAMBA Sec. 2.3 with the authors' settings: only ``sam.mask_decoder`` trains,
on frozen cached image embeddings and frozen prompt-encoder outputs, with
monai ``DiceLoss(sigmoid=True, squared_pred=True)`` on the decoder's
low-resolution logits, Adam (lr 1e-5, no weight decay) and
ReduceLROnPlateau(0.25, 5) stepped on the epoch's training loss. Binary
SAMBA trains the single-mask output on the whole tumour; SAMBA-mc trains the
three multimask outputs one-vs-rest on NETC, SNFH and ET.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.losses import DiceLoss
from segment_anything.modeling import MaskDecoder, Sam
from torch import Tensor

from fedmed.tasks.samba.config import SambaConfig
from fedmed.tasks.samba.data import SliceSample
from fedmed.tasks.samba.embedding_cache import EmbeddingCache
from fedmed.tasks.samba.prompts import decoder_target, jittered_box, to_input_frame

logger = logging.getLogger(__name__)


def batched_mask_logits(
    decoder: MaskDecoder,
    embeddings: Tensor,
    image_pe: Tensor,
    sparse: Tensor,
    dense: Tensor,
    multimask: bool,
) -> Tensor:
    """``MaskDecoder.predict_masks`` for B images with one prompt each, in one call.

    The stock method repeats a single image's embedding over that image's
    prompts (``repeat_interleave``), so a batch of images needs one call per
    image. Here prompt i is paired with image i and the rest is the stock
    computation of segment-anything 1.0 with the decoder's own modules (a test
    checks equality with the per-image call). The IoU head is skipped: SAMBA's
    loss does not use it. Output selection as in ``MaskDecoder.forward``.
    """
    tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((tokens.unsqueeze(0).expand(sparse.size(0), -1, -1), sparse), 1)
    src = embeddings + dense
    pos_src = image_pe.expand(src.shape[0], -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos_src, tokens)
    mask_tokens_out = hs[:, 1 : 1 + decoder.num_mask_tokens, :]
    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper_in = torch.stack(
        [
            mlp(mask_tokens_out[:, i, :])
            for i, mlp in enumerate(decoder.output_hypernetworks_mlps)
        ],
        dim=1,
    )
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    return masks[:, 1:] if multimask else masks[:, :1]


def decode(
    sam: Sam,
    embeddings: Tensor,
    boxes: Tensor,
    multimask: bool,
    decoder: MaskDecoder | None = None,
) -> Tensor:
    """Low-res mask logits ``(B, k, L, L)`` for image embeddings and input-frame boxes.

    ``Sam.forward`` runs under ``no_grad``, so the parts are called directly:
    the frozen prompt encoder without gradients, then the mask decoder
    (``decoder`` overrides ``sam.mask_decoder``, e.g. the zero-shot one).
    """
    decoder = sam.mask_decoder if decoder is None else decoder
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
        image_pe = sam.prompt_encoder.get_dense_pe()
    return batched_mask_logits(decoder, embeddings, image_pe, sparse, dense, multimask)


def sample_box(
    sample: SliceSample, cfg: SambaConfig, rng: np.random.Generator, jitter: int
) -> np.ndarray:
    """The slice's prompt in slice pixels: jittered tumour box or brain box."""
    if cfg.prompt == "brain":
        box = sample.brain_box
    else:
        box = jittered_box(sample.labels > 0, jitter, rng)
    if box is None:
        raise ValueError(
            f"slice {sample.key} has no {cfg.prompt} to put a box around; only "
            "prompted slices (data.prompted_indices) may become decoder samples"
        )
    return box


def batch_tensors(
    samples: Sequence[SliceSample],
    sam: Sam,
    cfg: SambaConfig,
    rng: np.random.Generator,
    jitter: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Embeddings, input-frame boxes and low-res targets of a batch, on SAM's device."""
    device = sam.device
    size = sam.image_encoder.img_size
    low_res = int(sam.prompt_encoder.mask_input_size[0])
    boxes = [
        to_input_frame(sample_box(s, cfg, rng, jitter)[None], s.labels.shape, size)[0]
        for s in samples
    ]
    targets = [
        decoder_target(s.labels, low_res, cfg.num_mask_channels) for s in samples
    ]
    embeddings = EmbeddingCache.load([s.embedding for s in samples], device)
    return (
        embeddings,
        torch.as_tensor(np.stack(boxes), dtype=torch.float32, device=device),
        torch.stack(targets).to(device),
    )


@dataclass
class DecoderReport:
    """What one local decoder fit did."""

    loss: float
    num_samples: int
    epochs: int
    epoch_losses: list[float] = field(default_factory=list)


def _decoder_epoch(sam, samples, cfg, optimiser, loss_fn, rng) -> float:
    """One pass over ``samples`` in random order; returns the mean Dice loss."""
    order = rng.permutation(len(samples))
    total = 0.0
    for start in range(0, len(samples), cfg.batch_size):
        batch = [samples[i] for i in order[start : start + cfg.batch_size]]
        embeddings, boxes, targets = batch_tensors(batch, sam, cfg, rng, cfg.box_jitter)
        optimiser.zero_grad()
        logits = decode(sam, embeddings, boxes, cfg.variant == "mc")
        loss = loss_fn(logits, targets)
        loss.backward()
        optimiser.step()
        total += loss.item() * len(batch)
    return total / len(samples)


def train_decoder(
    sam: Sam,
    samples: Sequence[SliceSample],
    cfg: SambaConfig,
    lr: float,
    epochs: int,
    rng: np.random.Generator,
) -> DecoderReport:
    """Fine-tune ``sam.mask_decoder`` for ``epochs`` on ``samples`` (SAMBA Sec. 2.3)."""
    if not samples or epochs == 0:
        return DecoderReport(float("nan"), len(samples), 0)
    decoder = sam.mask_decoder
    decoder.train()
    trained = [p for p in decoder.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trained, lr=lr, weight_decay=cfg.weight_decay)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, factor=cfg.plateau_factor, patience=cfg.plateau_patience
    )
    loss_fn = DiceLoss(sigmoid=True, squared_pred=True, reduction="mean")
    epoch_losses: list[float] = []
    for epoch in range(epochs):
        epoch_losses.append(_decoder_epoch(sam, samples, cfg, optimiser, loss_fn, rng))
        plateau.step(epoch_losses[-1])
        logger.info(
            "decoder epoch %d/%d: dice loss %.4f", epoch + 1, epochs, epoch_losses[-1]
        )
    decoder.eval()
    return DecoderReport(epoch_losses[-1], len(samples), epochs, epoch_losses)
