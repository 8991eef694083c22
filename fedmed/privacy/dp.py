"""Central differential privacy for FedAvg: clip each update, average, add noise.

DP-FedAvg with fixed clipping (McMahan et al. 2018, "Learning Differentially
Private Recurrent Language Models", Alg. 1; the mechanism of Flower's
``DifferentialPrivacyServerSideFixedClipping``): every site update
``w_i - w`` is clipped to L2 norm ``C`` over all its tensors, the ``m``
clipped updates are averaged uniformly, and Gaussian noise of standard
deviation ``sigma * C / m`` is added to the mean. One site moves the mean by
at most ``C / m``, so a round is a Gaussian mechanism with noise multiplier
``sigma`` at the site level; :mod:`fedmed.privacy.accountant` composes the
rounds into epsilon.

The same functions serve real runs (``strategies/dp.py``) and the in-process
DP benchmark (``fedmed.bench.loop``), so both apply one mechanism.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fedmed.comm.aggregation import weighted_mean


@dataclass(frozen=True)
class CentralDP:
    """Fixed clipping + Gaussian noise on the aggregate (DP-FedAvg).

    ``seed`` fixes the noise for reproducible benchmarks; ``None`` draws it
    from the operating system's entropy, as a real run must (noise a server
    could predict protects nothing).
    """

    noise_multiplier: float
    clip_norm: float
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.noise_multiplier < 0:
            raise ValueError(
                f"noise multiplier must be >= 0, found {self.noise_multiplier}"
            )
        if self.clip_norm <= 0:
            raise ValueError(f"clip norm must be > 0, found {self.clip_norm}")

    def generator(self) -> torch.Generator:
        """The noise source: seeded when ``seed`` is set, else from OS entropy."""
        seed = secrets.randbits(63) if self.seed is None else self.seed
        return torch.Generator().manual_seed(seed)

    def noise_std(self, num_updates: int) -> float:
        """Standard deviation ``sigma * C / m`` of the noise on a mean of ``m``."""
        return self.noise_multiplier * self.clip_norm / num_updates


def update_norm(update: Mapping[str, Tensor], reference: Mapping[str, Tensor]) -> float:
    """Global L2 norm of ``update - reference`` over all tensors."""
    squares = sum(
        float(((update[k].double() - reference[k].double()) ** 2).sum()) for k in update
    )
    return squares**0.5


def clip_update(
    update: Mapping[str, Tensor], reference: Mapping[str, Tensor], clip_norm: float
) -> dict[str, Tensor]:
    """``reference + delta * min(1, C / ||delta||)``: flat clipping (McMahan 2018).

    A zero update (a site returning the model unchanged) stays as it is
    rather than dividing by its zero norm; the arithmetic runs in float64 so
    a large ``delta`` cannot overflow float32 before it is scaled down.
    """
    norm = update_norm(update, reference)
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return {
        k: (
            reference[k].double() + (update[k].double() - reference[k].double()) * scale
        ).to(update[k].dtype)
        for k in update
    }


def add_noise(
    state: Mapping[str, Tensor], std: float, generator: torch.Generator
) -> dict[str, Tensor]:
    """Add i.i.d. Gaussian noise of standard deviation ``std`` to every element."""
    return {
        k: v + std * torch.randn(v.shape, generator=generator, dtype=v.dtype)
        for k, v in state.items()
    }


def private_mean(
    updates: Sequence[Mapping[str, Tensor]],
    reference: Mapping[str, Tensor],
    dp: CentralDP,
    generator: torch.Generator,
) -> dict[str, Tensor]:
    """Clip every update around ``reference``, average uniformly, add the noise."""
    if not updates:
        raise ValueError("a private mean needs at least one update")
    clipped = [clip_update(u, reference, dp.clip_norm) for u in updates]
    mean = weighted_mean(clipped, [1.0] * len(clipped))
    std = dp.noise_std(len(clipped))
    return add_noise(mean, std, generator) if std > 0 else mean
