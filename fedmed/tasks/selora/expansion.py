"""SeLoRA's training procedure: test every layer for one more rank every t steps.

Algorithm 1 of the SeLoRA paper (Mao et al. 2024): train the adapters as
plain LoRA; at every t-th step compute, per layer, the FI-Scores of the
current adapter and of the candidate with one more rank (Eqs. 3-4) and expand
the layer (Eq. 2) when the FI-Ratio reaches lambda. At most one rank is added
per layer per check.

Two ways to score, chosen by ``fisher``:

``"per-sample"`` (paper, default)
    Eq. 3 with per-sample gradients, both scores on the step's own batch at
    the parameters the step's gradient was taken at (no extra pass).
``"batch"`` (authors' released code)
    Squared norm of the batch-mean gradient; the current score from the
    training step's gradient, the candidate's from a second forward/backward
    on the same batch after the optimizer step, with no update of its own.

Both take the gradients in the canonical factorisation of each adapter (see
:mod:`fedmed.tasks.selora.fisher`), so how an aggregate or a site happens to
split ΔW between A and B does not steer which layers grow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from fedmed.tasks.selora.fisher import FisherMode, FisherProbe, FisherScores
from fedmed.tasks.selora.layer import (
    ADAPTER,
    expand_layer,
    kaiming_row,
    layer_rank,
    lora_layers,
)

logger = logging.getLogger(__name__)

LossFn = Callable[[], Tensor]


class SelfExpansion:
    """Step function of SeLoRA training (Algorithm 1) over every LoRA layer."""

    def __init__(
        self,
        model: nn.Module,
        every: int,
        threshold: float,
        fisher: FisherMode = "per-sample",
        max_rank: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        if every < 1:
            raise ValueError(f"expansion interval t must be >= 1, found {every}")
        self.layers = lora_layers(model)
        if not self.layers:
            raise ValueError(
                "model has no LoRA layers to expand; inject adapters first"
            )
        self.every = every
        self.threshold = threshold
        self.fisher = fisher
        self.max_rank = max_rank
        self.generator = generator
        self.expansions = 0
        self.last_scores: dict[str, FisherScores] = {}

    def is_check_step(self, step: int) -> bool:
        """True on the t-th, 2t-th, ... step (``step`` counts from 0)."""
        return (step + 1) % self.every == 0

    def train_step(
        self, loss_fn: LossFn, optimizer: Optimizer, step: int, batch_size: int
    ) -> float:
        """One optimizer step; on check steps also score and expand layers."""
        if not self.is_check_step(step):
            loss = loss_fn()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return float(loss.detach())
        candidates = self._draw_candidates()
        if self.fisher == "per-sample":
            with FisherProbe(self.layers, candidates, "per-sample") as probe:
                loss = loss_fn()
                loss.backward()
            scores = probe.scores(batch_size)
            optimizer.step()
        else:
            with FisherProbe(self.layers, candidates, "batch") as probe:
                loss = loss_fn()
                loss.backward()
            current = {n: s.current for n, s in probe.scores(batch_size).items()}
            optimizer.step()
            scores = self._batch_candidate_scores(
                loss_fn, optimizer, candidates, current, batch_size
            )
        optimizer.zero_grad(set_to_none=True)
        self.expand(scores, candidates, optimizer)
        return float(loss.detach())

    def _batch_candidate_scores(
        self,
        loss_fn: LossFn,
        optimizer: Optimizer,
        candidates: dict[str, Tensor],
        current: dict[str, float],
        batch_size: int,
    ) -> dict[str, FisherScores]:
        """Candidate scores after the step on the same batch (authors' procedure)."""
        optimizer.zero_grad(set_to_none=True)
        with FisherProbe(self.layers, candidates, "batch") as probe:
            loss_fn().backward()
        after = probe.scores(batch_size)
        return {
            name: FisherScores(current=current[name], candidate=after[name].candidate)
            for name in self.layers
        }

    def _draw_candidates(self) -> dict[str, Tensor]:
        rows = {}
        for name, layer in self.layers.items():
            weight = layer.lora_A[ADAPTER].weight
            row = kaiming_row(weight.shape[1], self.generator, dtype=weight.dtype)
            rows[name] = row.to(weight.device)
        return rows

    def _rank_cap(self, name: str) -> int:
        weight = self.layers[name].lora_A[ADAPTER].weight
        out_features = self.layers[name].lora_B[ADAPTER].weight.shape[0]
        cap = min(weight.shape[1], out_features)
        return min(cap, self.max_rank) if self.max_rank else cap

    def expand(
        self,
        scores: dict[str, FisherScores],
        candidates: dict[str, Tensor],
        optimizer: Optimizer | None,
    ) -> list[str]:
        """Expand every layer whose FI-Ratio >= lambda (and below its rank cap)."""
        self.last_scores = scores
        grown = []
        for name, layer in self.layers.items():
            if scores[name].ratio < self.threshold:
                continue
            if layer_rank(layer) >= self._rank_cap(name):
                continue
            expand_layer(layer, candidates[name], optimizer)
            grown.append(name)
        self.expansions += len(grown)
        if grown:
            logger.debug("SeLoRA expanded %d layers: %s", len(grown), ", ".join(grown))
        return grown
