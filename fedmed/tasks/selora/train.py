"""Local training and validation of the adapters (pure torch).

Each fit builds a fresh Adam optimizer over the trainable parameters (the
authors' setting: Adam, lr 1e-4, no weight decay, no schedule) and runs the
method's step function: SeLoRA's expansion checks (Algorithm 1), DyLoRA's
nested-rank sampling, AdaLoRA's budget allocation, or plain LoRA. Validation
is the same noise-prediction MSE with noise and timesteps drawn from a fixed
seed, so successive evaluations are comparable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.optim import Adam, Optimizer
from torch.utils.data import DataLoader, Dataset

from fedmed.tasks.selora.config import SeLoRAConfig
from fedmed.tasks.selora.dylora import NestedRankSampler
from fedmed.tasks.selora.expansion import LossFn, SelfExpansion
from fedmed.tasks.selora.layer import ADAPTER, layer_ranks
from fedmed.tasks.selora.model import TextToImageDiffusion

logger = logging.getLogger(__name__)


@dataclass
class FitStats:
    """What one local fit did."""

    loss: float
    steps: int
    expansions: int = 0
    ranks: dict[str, int] = field(default_factory=dict)


class PlainStep:
    """One Adam step of ordinary LoRA training."""

    def train_step(
        self, loss_fn: LossFn, optimizer: Optimizer, step: int, batch_size: int
    ) -> float:
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


class AdaLoRAStep:
    """AdaLoRA (Zhang et al. 2023) via peft: orthogonal penalty + budget allocation."""

    def __init__(self, model: TextToImageDiffusion, total_steps: int) -> None:
        self.model = model
        for tuner in model.tuners.values():
            tuner.rankallocator.set_total_step(max(total_steps, 1))
        configs = [tuner.peft_config[ADAPTER] for tuner in model.tuners.values()]
        self.orth_reg_weight = configs[0].orth_reg_weight if configs else 0.0

    def orthogonality(self) -> Tensor:
        """Mean ||P Pᵀ - I||_F over AdaLoRA's A and B (peft's regulariser)."""
        terms = []
        for tuner in self.model.tuners.values():
            for name, p in tuner.model.named_parameters():
                if "lora_A" in name or "lora_B" in name:
                    cov = p @ p.T if "lora_A" in name else p.T @ p
                    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
                    terms.append(torch.linalg.matrix_norm(cov - eye))
        return torch.stack(terms).mean() if terms else torch.zeros(())

    def train_step(
        self, loss_fn: LossFn, optimizer: Optimizer, step: int, batch_size: int
    ) -> float:
        loss = loss_fn()
        (loss + self.orth_reg_weight * self.orthogonality()).backward()
        optimizer.step()
        for tuner in self.model.tuners.values():
            tuner.update_and_allocate(step)
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


def step_function(
    model: TextToImageDiffusion,
    cfg: SeLoRAConfig,
    total_steps: int,
    generator: torch.Generator,
):
    """The method's per-step training procedure."""
    if cfg.method == "selora":
        return SelfExpansion(
            model,
            cfg.expand_every,
            cfg.expand_threshold,
            cfg.fisher,
            cfg.max_rank,
            generator,
        )
    if cfg.method == "dylora":
        return NestedRankSampler(model, generator)
    if cfg.method == "adalora":
        return AdaLoRAStep(model, total_steps)
    return PlainStep()


def _loader(dataset: Dataset, batch_size: int, seed: int, shuffle: bool) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=0,
    )


def _batches(loader: DataLoader, total: int):
    """Yield ``total`` batches, starting a new epoch when the loader runs out."""
    step = 0
    while step < total:
        for pixels, reports in loader:
            yield step, pixels, list(reports)
            step += 1
            if step >= total:
                return


def fit_local(
    model: TextToImageDiffusion,
    dataset: Dataset,
    cfg: SeLoRAConfig,
    seed: int,
    lr: float | None = None,
) -> FitStats:
    """Train the adapters for ``local-epochs`` epochs (capped at ``max-steps``)."""
    loader = _loader(dataset, cfg.batch_size, seed, shuffle=True)
    total = len(loader) * cfg.local_epochs
    total = min(total, cfg.max_steps) if cfg.max_steps else total
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = Adam(params, lr=lr or cfg.lr)
    procedure = step_function(model, cfg, total, generator)
    model.train()
    losses = []
    for step, pixels, reports in _batches(loader, total):
        batch = model.prepare(pixels, reports, generator)
        loss_fn = lambda b=batch: model.loss(b)  # noqa: E731 - re-runnable on one batch
        losses.append(procedure.train_step(loss_fn, optimizer, step, batch.size))
    model.eval()
    mean = sum(losses) / max(len(losses), 1)
    expansions = getattr(procedure, "expansions", 0)
    logger.info(
        "fit: %d steps, mean loss %.4f, %d expansions", len(losses), mean, expansions
    )
    return FitStats(mean, len(losses), expansions, layer_ranks(model))


@torch.no_grad()
def validation_loss(
    model: TextToImageDiffusion, dataset: Dataset, batch_size: int, seed: int = 0
) -> float:
    """Mean noise-prediction MSE, fixed noise / timesteps (the paper's validation)."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    total, count = 0.0, 0
    for pixels, reports in _loader(dataset, batch_size, seed, shuffle=False):
        batch = model.prepare(pixels, list(reports), generator)
        total += float(model.loss(batch)) * batch.size
        count += batch.size
    if count == 0:
        raise ValueError("validation set is empty")
    return total / count
