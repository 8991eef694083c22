"""SAMBA's voting network: a small monai 3D U-Net that fuses SAM masks into 3 labels.

SAMBA Sec. 2.4: a 3D U-Net of about 200k parameters, trained with Dice loss,
takes SAM's binary outputs for the modalities (and views) together with the
MRIs and produces the three-class segmentation. The authors' network (their
Voting_3D notebook) is monai ``UNet(in 7, out 3, channels (16, 32, 64),
strides (2, 2))`` = 116,343 parameters, fed the four volume-normalised MRIs
plus SAM's T1, T2 and FLAIR mask volumes (axial view), with sigmoid outputs
one-vs-rest for labels 1, 2, 3, Adam 1e-3 and early stopping on the
validation loss.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.losses import DiceLoss
from monai.networks.nets import UNet
from torch import Tensor, nn

from fedmed.data.brats import ET_LABEL, MODALITIES, NETC, SNFH, BratsVolume
from fedmed.tasks.samba.config import SambaConfig

logger = logging.getLogger(__name__)

VOTING_LABELS = (NETC, SNFH, ET_LABEL)
"""Output channel k is one-vs-rest for canonical label VOTING_LABELS[k]."""
PAINT_ORDER = (SNFH, ET_LABEL, NETC)
"""Labels painted in this order (later overrides earlier), as the authors do."""


def build_voting_net(cfg: SambaConfig) -> UNet:
    """The authors' monai 3D U-Net; 116,343 parameters for 7 input channels.

    The conv biases that feed an instance norm are frozen (see
    :func:`inert_conv_biases`): they never train, so they never travel.
    """
    net = UNet(
        spatial_dims=3,
        in_channels=cfg.voting_in_channels,
        out_channels=len(VOTING_LABELS),
        channels=cfg.voting_channels_tuple,
        strides=cfg.voting_strides_tuple,
    )
    for bias in inert_conv_biases(net):
        bias.requires_grad_(False)
    return net


def inert_conv_biases(net: nn.Module) -> list[nn.Parameter]:
    """Conv biases followed directly by an instance norm (monai ``ADN`` order "N..").

    Instance norm subtracts each channel's mean over the volume, which removes
    a per-channel bias exactly: the bias never changes the output and its
    gradient is zero up to rounding.
    """
    inert = []
    for module in net.modules():
        adn = getattr(module, "adn", None)
        conv = getattr(module, "conv", None)
        if adn is None or conv is None or getattr(conv, "bias", None) is None:
            continue
        first = next(iter(adn.children()), None)
        if isinstance(first, nn.modules.instancenorm._InstanceNorm):
            inert.append(conv.bias)
    return inert


def volume_normalise(volume: np.ndarray) -> np.ndarray:
    """Clip to the volume's 0.5/99.5 percentiles, scale to [0, 1], keep zeros at 0."""
    low, high = np.percentile(volume, (0.5, 99.5))
    clipped = np.clip(volume, low, high)
    span = float(clipped.max() - clipped.min()) or 1.0
    scaled = (clipped - clipped.min()) / span
    return np.where(volume == 0, 0.0, scaled).astype(np.float32)


def voting_input(
    volume: BratsVolume,
    sam_masks: Mapping[tuple[str, str], np.ndarray],
    cfg: SambaConfig,
) -> np.ndarray:
    """``(C, X, Y, Z)`` float16: 4 normalised MRIs + SAM masks per modality and view."""
    channels = [volume_normalise(volume.images[m]) for m in MODALITIES]
    for modality in cfg.voting_modality_list:
        for view in cfg.voting_view_list:
            channels.append(sam_masks[(modality, view)].astype(np.float32))
    return np.stack(channels).astype(np.float16)


def voting_target(labels: np.ndarray) -> np.ndarray:
    """``(3, X, Y, Z)`` uint8 one-vs-rest targets for NETC, SNFH, ET."""
    return np.stack([labels == lab for lab in VOTING_LABELS]).astype(np.uint8)


def _pad_to(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad the three spatial axes up to a multiple of the U-Net's total stride."""
    pads: list[int] = []
    for size in reversed(x.shape[-3:]):
        pads += [0, (-size) % multiple]
    return nn.functional.pad(x, pads)


def run_voting(net: nn.Module, inputs: Tensor) -> Tensor:
    """Logits for a batch ``(B, C, X, Y, Z)`` of any size (padded, cropped back)."""
    multiple = int(np.prod(net.strides)) if hasattr(net, "strides") else 1
    shape = inputs.shape[-3:]
    logits = net(_pad_to(inputs, multiple))
    return logits[..., : shape[0], : shape[1], : shape[2]]


@dataclass
class VotingReport:
    """What one voting-network training run did."""

    train_loss: float
    val_loss: float | None
    epochs_run: int


def _mean_loss(net, loss_fn, data, batch_size, device) -> float:
    net.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            x, y = _batch(data[start : start + batch_size], device)
            total += float(loss_fn(run_voting(net, x), y)) * len(x)
    return total / max(len(data), 1)


def _batch(
    items: Sequence[tuple[np.ndarray, np.ndarray]], device
) -> tuple[Tensor, Tensor]:
    x = torch.from_numpy(np.stack([i for i, _ in items])).float().to(device)
    y = torch.from_numpy(np.stack([t for _, t in items])).float().to(device)
    return x, y


def _train_epoch(net, loss_fn, optimiser, train, batch_size, rng, device) -> float:
    net.train()
    order = rng.permutation(len(train))
    losses = []
    for start in range(0, len(train), batch_size):
        x, y = _batch([train[i] for i in order[start : start + batch_size]], device)
        optimiser.zero_grad()
        loss = loss_fn(run_voting(net, x), y)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def train_voting(
    net: nn.Module,
    train: Sequence[tuple[np.ndarray, np.ndarray]],
    val: Sequence[tuple[np.ndarray, np.ndarray]],
    cfg: SambaConfig,
    rng: np.random.Generator,
    device: torch.device,
) -> VotingReport:
    """Dice-loss training, early stopping on the validation loss (best weights kept).

    ``train`` / ``val`` hold ``(voting_input, voting_target)`` per case. Without
    validation cases the net trains for ``voting-epochs`` and keeps the last weights.
    """
    loss_fn = DiceLoss(sigmoid=True)
    trained = [p for p in net.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trained, lr=cfg.voting_lr)
    best_val, best_state, stale = float("inf"), None, 0
    train_loss, epochs_run = float("nan"), 0
    for _ in range(cfg.voting_epochs):
        train_loss = _train_epoch(
            net, loss_fn, optimiser, train, cfg.voting_batch_size, rng, device
        )
        epochs_run += 1
        if not val:
            continue
        val_loss = _mean_loss(net, loss_fn, val, cfg.voting_batch_size, device)
        if val_loss < best_val:
            best_val, best_state, stale = val_loss, copy.deepcopy(net.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.voting_patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    return VotingReport(train_loss, best_val if val else None, epochs_run)


def predict_labels(
    net: nn.Module, inputs: np.ndarray, device: torch.device
) -> np.ndarray:
    """Canonical labels: sigmoid > 0.5 per channel, painted oedema, ET, then NETC."""
    net.eval()
    with torch.no_grad():
        x = torch.from_numpy(inputs[None]).float().to(device)
        probs = torch.sigmoid(run_voting(net, x))[0].cpu().numpy()
    labels = np.zeros(probs.shape[1:], dtype=np.uint8)
    for label in PAINT_ORDER:
        labels[probs[VOTING_LABELS.index(label)] > 0.5] = label
    return labels
