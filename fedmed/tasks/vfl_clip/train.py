"""CoOp's loss and its two halves across the vertical split (pure torch).

Paper Eq. 1: ``L = -log softmax_y(s * cos(z_v, z_t^k))`` with CLIP's frozen
logit scale ``s``. The loss depends on the prompt context only through the
class text features ``T`` (C x d), so by the chain rule

    dL/dctx = (dT/dctx)^T  dL/dT,   dL/dT = sum_i G_i,
    G_i = d(sum of losses on provider i's samples)/dT.

An image provider computes ``G_i`` on its own embeddings (it needs only
``T`` and ``s``); the knowledge provider backpropagates the securely
aggregated ``sum_i G_i / sum_i N_i`` through its text tower. That is exactly
the gradient of the mean loss over the pooled data, so VFL training equals
centralised full-batch CoOp (:func:`centralised_step`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedmed.tasks.vfl_clip.model import CoopTextModel


def coop_logits(
    image_embeddings: Tensor, text_features: Tensor, logit_scale: float
) -> Tensor:
    """``s * cos(z_v, z_t^k)`` for every image and class (paper Eq. 1)."""
    text = F.normalize(text_features, dim=-1)
    image = F.normalize(image_embeddings, dim=-1)
    return logit_scale * image @ text.T


@dataclass(frozen=True)
class ProviderGradient:
    """One image provider's contribution: gradient and loss of its SUM loss."""

    gradient: np.ndarray  # (C, d), d(sum_n loss_n)/dT
    loss_sum: float
    count: int

    def to_vector(self) -> np.ndarray:
        """Flat ``[G (C*d), loss_sum, count]``; see ``AggregatedGradient.from_sum``."""
        tail = np.array([self.loss_sum, float(self.count)])
        return np.concatenate([self.gradient.reshape(-1).astype(np.float64), tail])


def provider_gradient(
    image_embeddings: Tensor, labels: Tensor, text_features: Tensor, logit_scale: float
) -> ProviderGradient:
    """``G_i = d(sum of CE losses)/dT`` on one provider's embeddings (no ctx access)."""
    text = text_features.detach().clone().requires_grad_(True)
    logits = coop_logits(image_embeddings, text, logit_scale)
    loss = F.cross_entropy(logits, labels, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, text)
    return ProviderGradient(
        gradient.detach().double().numpy(), float(loss.detach()), int(labels.numel())
    )


def knowledge_step(
    model: CoopTextModel,
    optimizer: torch.optim.Optimizer,
    gradient_sum: np.ndarray,
    count: int,
) -> None:
    """Backpropagate the pooled mean-loss gradient ``sum G_i / N`` into the context."""
    if count < 1:
        raise ValueError(f"aggregated sample count must be >= 1, found {count}")
    text = model()
    upstream = torch.as_tensor(gradient_sum / count, dtype=text.dtype)
    optimizer.zero_grad(set_to_none=True)
    text.backward(upstream)
    optimizer.step()


def centralised_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    image_embeddings: Tensor,
    labels: Tensor,
) -> float:
    """One CoOp step on pooled embeddings (the centralised reference); returns loss."""
    logits = coop_logits(image_embeddings, model(), float(model.logit_scale))
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Adam:
    """Adam on the trainable tensors, the context vectors (paper Sec. IV-B: lr 1e-3).

    Adam works element by element, so one Adam over several knowledge
    providers' contexts equals one Adam per provider.
    """
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)


ROUND_SPAN = 2**32  # rounds per run seed in a batch key


def batch_seed(seed: int, round_id: int) -> int:
    """Round ``round_id``'s batch key: the run seed and the round, packed.

    Every image provider receives the same key and draws its own batch from
    it with :func:`batch_indices`.
    """
    if not 0 <= round_id < ROUND_SPAN:
        raise ValueError(f"round must be in [0, 2**32), found {round_id}")
    return seed * ROUND_SPAN + round_id


def batch_indices(count: int, batch_size: int, key: int) -> np.ndarray:
    """Indices of this round's local batch: mini-batch epochs over ``count`` samples.

    ``batch_size`` 0 (or at least ``count``) takes every sample. Otherwise
    rounds walk through a provider's data as CoOp's data loader does: an
    epoch is ``ceil(count / batch_size)`` rounds over one random permutation
    (seeded by the run seed and the epoch), each sample drawn once per epoch;
    the epoch's last batch holds the remainder.
    """
    if batch_size <= 0 or batch_size >= count:
        return np.arange(count)
    seed, round_id = divmod(key, ROUND_SPAN)
    steps_per_epoch = -(-count // batch_size)
    epoch, position = divmod(max(round_id - 1, 0), steps_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(count)
    return np.sort(order[position * batch_size : (position + 1) * batch_size])


def pooled_batch(part_sizes: Sequence[int], batch_size: int, seed: int) -> np.ndarray:
    """One round's batch of pooled data: every part's own batch, offset.

    Each image provider draws its batch from its own data with the round's
    seed; pooling the providers' data and drawing per part gives exactly the
    samples a VFL round sums over.
    """
    offsets = np.cumsum([0, *part_sizes[:-1]])
    return np.concatenate(
        [
            offset + batch_indices(size, batch_size, seed)
            for offset, size in zip(offsets, part_sizes, strict=True)
        ]
    ).astype(np.int64)


def train_centralised(
    model: nn.Module,
    image_embeddings: Tensor,
    labels: Tensor,
    rounds: int,
    lr: float,
    batch_size: int = 0,
    seed: int = 0,
    part_sizes: Sequence[int] = (),
) -> list[float]:
    """Centralised CoOp on the budget of ``rounds`` VFL rounds; per-round losses.

    One Adam step per round (one optimiser for the whole run), on the samples
    that round's VFL step sums over: ``part_sizes`` are the image providers'
    sample counts in the order their data were pooled (default: one part).
    """
    optimizer = make_optimizer(model, lr)
    sizes = list(part_sizes) or [len(labels)]
    losses = []
    for round_id in range(1, rounds + 1):
        keep = torch.as_tensor(
            pooled_batch(sizes, batch_size, batch_seed(seed, round_id))
        )
        losses.append(
            centralised_step(model, optimizer, image_embeddings[keep], labels[keep])
        )
    return losses


@torch.no_grad()
def predict_logits(
    image_embeddings: Tensor, text_features: Tensor, logit_scale: float
) -> np.ndarray:
    """Class logits for every embedding (evaluation, stays on the provider)."""
    return coop_logits(image_embeddings, text_features, logit_scale).double().numpy()
