"""DyLoRA baseline: nested-rank training of peft LoRA layers.

DyLoRA (Valipour et al., "DyLoRA: Parameter-Efficient Tuning of Pre-trained
Models using Dynamic Search-Free Low-Rank Adaptation", EACL 2023) trains a
rank-r adapter so that every truncation to its first b components works: at
each step it samples b uniformly from {1, ..., r} and uses
h = W0 x + (alpha / b) B[:, :b] A[:b] x. Here every component up to b takes
gradient (the paper's non-frozen variant); evaluation uses the full rank with
scaling alpha / r. The truncation is a forward hook on each ``lora_A`` that
zeroes components b + 1 ... r, plus the scaling of the sampled b.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from fedmed.tasks.selora.expansion import LossFn
from fedmed.tasks.selora.layer import ADAPTER, layer_rank, lora_layers


class NestedRankSampler:
    """Step function of DyLoRA training over every LoRA layer of a model."""

    def __init__(
        self, model: nn.Module, generator: torch.Generator | None = None
    ) -> None:
        self.layers = lora_layers(model)
        if not self.layers:
            raise ValueError("model has no LoRA layers; inject adapters first")
        ranks = {layer_rank(layer) for layer in self.layers.values()}
        if len(ranks) != 1:
            raise ValueError(
                f"DyLoRA expects one rank for every layer, found {sorted(ranks)}"
            )
        self.rank = ranks.pop()
        self.generator = generator
        self.alphas = {n: layer.lora_alpha[ADAPTER] for n, layer in self.layers.items()}
        self.sampled: list[int] = []

    def sample_rank(self) -> int:
        """b ~ Uniform{1, ..., r} (DyLoRA's p_B)."""
        return int(torch.randint(1, self.rank + 1, (1,), generator=self.generator))

    @contextmanager
    def truncated(self, b: int):
        """Run the adapters at rank b: first b components, scaling alpha / b."""
        if not 1 <= b <= self.rank:
            raise ValueError(f"truncation b must be in [1, {self.rank}], found {b}")
        mask = torch.zeros(self.rank)
        mask[:b] = 1.0

        def hook(module, inputs, output: Tensor) -> Tensor:
            return output * mask.to(output)

        handles = [
            layer.lora_A[ADAPTER].register_forward_hook(hook)
            for layer in self.layers.values()
        ]
        for name, layer in self.layers.items():
            layer.scaling[ADAPTER] = self.alphas[name] / b
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            for name, layer in self.layers.items():
                layer.scaling[ADAPTER] = self.alphas[name] / self.rank

    def train_step(
        self, loss_fn: LossFn, optimizer: Optimizer, step: int, batch_size: int
    ) -> float:
        """One optimizer step at a freshly sampled truncation b."""
        b = self.sample_rank()
        self.sampled.append(b)
        with self.truncated(b):
            loss = loss_fn()
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())
