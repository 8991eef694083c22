"""Local training and prediction for FPT and its baselines (pure torch).

The optimisation follows FPT §3.2 and the authors' code: AdamW
(betas 0.9/0.999, weight decay 0.1) on the trainable tensors only,
cross-entropy, gradient-norm clipping at 1.0, and a half-cycle cosine learning
rate updated every iteration and decaying to 0 at the end of training. In a
federation "the end of training" is the last step of the last round, so the
schedule position is ``(round - 1) * steps_per_round + step``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from fedmed.tasks.fpt.config import FptConfig

ADAMW_BETAS = (0.9, 0.999)


def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """Half-cycle cosine from ``base_lr`` at step 0 to 0 at ``total_steps``."""
    progress = min(1.0, step / max(1, total_steps))
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def model_inputs(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The batch without its labels: the model's keyword arguments."""
    return {name: value for name, value in batch.items() if name != "label"}


def _batches(loader: DataLoader, epochs: int, max_steps: int) -> Iterator[dict]:
    steps = 0
    for _ in range(epochs):
        for batch in loader:
            yield batch
            steps += 1
            if max_steps and steps >= max_steps:
                return


def _steps_per_round(batches_per_epoch: int, cfg: FptConfig) -> int:
    steps = cfg.local_epochs * batches_per_epoch
    return min(steps, cfg.max_steps_per_round) if cfg.max_steps_per_round else steps


def train_round(
    model: nn.Module,
    dataset: Dataset,
    cfg: FptConfig,
    *,
    lr: float,
    server_round: int,
    num_rounds: int,
    seed: int,
) -> dict[str, float]:
    """One round of ``cfg.local_epochs`` epochs; returns mean loss, steps, last lr."""
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=cfg.num_workers,
    )
    steps = _steps_per_round(len(loader), cfg)
    offset, total = (server_round - 1) * steps, num_rounds * steps
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=lr, betas=ADAMW_BETAS, weight_decay=cfg.weight_decay
    )
    model.train()
    losses: list[float] = []
    rate = lr
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # augmentation and dropout draws
        batches = _batches(loader, cfg.local_epochs, cfg.max_steps_per_round)
        for step, batch in enumerate(batches):
            rate = cosine_lr(lr, offset + step, total)
            losses.append(_step(model, batch, optimizer, params, rate, cfg.clip_norm))
    mean_loss = float(np.mean(losses)) if losses else float("nan")
    return {"train_loss": mean_loss, "steps": float(len(losses)), "lr": rate}


def _step(
    model: nn.Module,
    batch: Mapping[str, Tensor],
    optimizer: torch.optim.Optimizer,
    params: list[Tensor],
    lr: float,
    clip_norm: float,
) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = F.cross_entropy(model(**model_inputs(batch)), batch["label"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip_norm)
    optimizer.step()
    return loss.item()


@torch.no_grad()
def predict(
    model: nn.Module, dataset: Dataset, batch_size: int, num_workers: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and softmax scores for every sample of ``dataset``."""
    model.eval()
    labels, probs = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
        logits = model(**model_inputs(batch))
        probs.append(torch.softmax(logits.float(), dim=1).numpy())
        labels.append(batch["label"].numpy())
    return np.concatenate(labels), np.concatenate(probs)
