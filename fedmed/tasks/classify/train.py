"""Local training and evaluation loops of the classifier (pure torch)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset


def _resize(images: torch.Tensor, side: int) -> torch.Tensor:
    if images.shape[-1] == side:
        return images
    return F.interpolate(
        images, size=(side, side), mode="bilinear", align_corners=False
    )


def train_local(
    model: nn.Module,
    dataset: Dataset,
    *,
    side: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    epochs: int,
    max_steps: int,
    seed: int,
) -> dict[str, float]:
    """AdamW on the trainable parameters; returns mean loss and step count."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=generator
    )
    model.train()
    losses: list[float] = []
    for _ in range(epochs):
        for images, labels in loader:
            loss = F.cross_entropy(model(_resize(images, side)), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if max_steps and len(losses) >= max_steps:
                break
        if max_steps and len(losses) >= max_steps:
            break
    return {
        "train_loss": float(np.mean(losses)) if losses else float("nan"),
        "steps": float(len(losses)),
    }


@torch.no_grad()
def predict(
    model: nn.Module, dataset: Dataset, *, side: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and softmax scores for every sample of ``dataset``."""
    model.eval()
    labels, probs = [], []
    for images, target in DataLoader(dataset, batch_size=batch_size):
        probs.append(torch.softmax(model(_resize(images, side)), dim=1).numpy())
        labels.append(target.numpy())
    return np.concatenate(labels), np.concatenate(probs)
