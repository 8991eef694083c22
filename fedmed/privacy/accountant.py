"""Rényi-DP accountant for the (sub)sampled Gaussian mechanism of DP-FedAvg.

Each round releases the mean of clipped site updates plus Gaussian noise of
standard deviation ``noise_multiplier * clip_norm / m`` (McMahan et al. 2018,
"Learning Differentially Private Recurrent Language Models", Alg. 1, the
mechanism Flower's fixed-clipping wrappers implement). One site's update
moves that mean by at most ``clip_norm / m``, so a round is a Gaussian
mechanism with noise multiplier ``sigma`` at the site level.

RDP of one round at integer order ``alpha`` (Mironov, Talwar & Zhang 2019,
"Rényi Differential Privacy of the Sampled Gaussian Mechanism", Sec. 3.3):

* no sampling (``q = 1``): ``alpha / (2 sigma^2)`` (Mironov 2017, Prop. 7);
* Poisson sampling with rate ``q``:
  ``log(sum_k C(alpha,k) (1-q)^(alpha-k) q^k exp((k^2-k) / (2 sigma^2))) / (alpha-1)``.

RDP composes additively over rounds; the (epsilon, delta) guarantee uses the
conversion of Balle et al. 2020 ("Hypothesis testing interpretations and
Rényi differential privacy", Thm. 21), as in Opacus and TF-Privacy:
``eps = rdp + log((alpha-1)/alpha) - (log delta + log alpha) / (alpha - 1)``,
minimised over the orders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Integer orders; integers make the sampled-Gaussian formula exact.
DEFAULT_ORDERS: tuple[int, ...] = (*range(2, 65), 80, 96, 128, 192, 256, 512, 1024)


def _log_add(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` without overflow."""
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


def rdp_sampled_gaussian(q: float, noise_multiplier: float, order: int) -> float:
    """RDP at integer ``order`` of one sampled Gaussian round (Mironov et al. 2019)."""
    if not 0.0 < q <= 1.0:
        raise ValueError(f"sampling rate must be in (0, 1], found {q}")
    if noise_multiplier <= 0:
        raise ValueError(f"noise multiplier must be > 0, found {noise_multiplier}")
    if order < 2 or int(order) != order:
        raise ValueError(f"RDP orders must be integers >= 2, found {order}")
    if q == 1.0:
        return order / (2.0 * noise_multiplier**2)
    log_a = -math.inf
    for k in range(order + 1):
        term = (
            math.log(math.comb(order, k))
            + (order - k) * math.log1p(-q)
            + k * math.log(q)
            + (k * k - k) / (2.0 * noise_multiplier**2)
        )
        log_a = _log_add(log_a, term)
    return log_a / (order - 1)


def epsilon_from_rdp(
    rdp: np.ndarray, orders: tuple[int, ...], delta: float
) -> tuple[float, int]:
    """Smallest epsilon over ``orders`` at ``delta`` (Balle et al. 2020, Thm. 21)."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), found {delta}")
    alphas = np.asarray(orders, dtype=float)
    eps = (
        np.asarray(rdp)
        + np.log1p(-1.0 / alphas)
        - (math.log(delta) + np.log(alphas)) / (alphas - 1.0)
    )
    best = int(np.nanargmin(eps))
    return max(float(eps[best]), 0.0), int(orders[best])


@dataclass
class RdpAccountant:
    """Running privacy spend of DP-FedAvg rounds (site-level adjacency)."""

    noise_multiplier: float
    sampling_rate: float = 1.0
    orders: tuple[int, ...] = DEFAULT_ORDERS
    rounds: int = 0

    def __post_init__(self) -> None:
        self._per_round = np.array(
            [
                rdp_sampled_gaussian(self.sampling_rate, self.noise_multiplier, a)
                for a in self.orders
            ]
        )

    def step(self, rounds: int = 1) -> None:
        """Compose ``rounds`` more releases."""
        if rounds < 0:
            raise ValueError(f"rounds must be >= 0, found {rounds}")
        self.rounds += rounds

    def epsilon(self, delta: float) -> float:
        """Cumulative epsilon at ``delta`` after the rounds composed so far."""
        if self.rounds == 0:
            return 0.0
        return epsilon_from_rdp(self._per_round * self.rounds, self.orders, delta)[0]


def epsilon_after(
    noise_multiplier: float, rounds: int, delta: float, sampling_rate: float = 1.0
) -> float:
    """Epsilon of ``rounds`` DP-FedAvg rounds; ``inf`` without noise."""
    if noise_multiplier <= 0:
        return math.inf
    accountant = RdpAccountant(noise_multiplier, sampling_rate)
    accountant.step(rounds)
    return accountant.epsilon(delta)
