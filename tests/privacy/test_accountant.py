"""RDP accountant of the (sub)sampled Gaussian mechanism (fedmed.privacy.accountant)."""

import math

import numpy as np
import pytest

from fedmed.privacy.accountant import (
    RdpAccountant,
    epsilon_after,
    epsilon_from_rdp,
    rdp_sampled_gaussian,
)


def test_epsilon_is_finite_and_decreases_with_noise():
    # Prepare
    sigmas = [0.5, 0.8, 1.0, 2.0, 4.0]
    # Execute
    eps = [epsilon_after(s, rounds=20, delta=1e-5) for s in sigmas]
    # Assert
    assert all(math.isfinite(e) and e > 0 for e in eps)
    assert all(a > b for a, b in zip(eps, eps[1:], strict=False))


def test_epsilon_grows_with_rounds_and_shrinks_with_sampling():
    # Execute
    few, many = epsilon_after(1.0, 10, 1e-5), epsilon_after(1.0, 100, 1e-5)
    sampled = epsilon_after(1.0, 100, 1e-5, sampling_rate=0.1)
    # Assert
    assert few < many
    assert sampled < many / 3


def test_sampled_formula_tends_to_the_unsampled_gaussian():
    # Prepare: q -> 1 must give alpha / (2 sigma^2) (Mironov et al. 2019, Sec. 3.3)
    sigma = 1.3
    for order in (2, 5, 17):
        # Execute
        near_one = rdp_sampled_gaussian(1 - 1e-9, sigma, order)
        # Assert
        assert near_one == pytest.approx(order / (2 * sigma**2), rel=1e-6)


def test_small_sampling_rate_gives_quadratic_rdp_at_order_two():
    # Prepare: at order 2 the sum has a closed form: 1 + q^2 (e^{1/sigma^2} - 1)
    q, sigma = 0.01, 2.0
    # Execute
    rdp = rdp_sampled_gaussian(q, sigma, 2)
    # Assert
    assert rdp == pytest.approx(math.log1p(q * q * math.expm1(1 / sigma**2)), rel=1e-9)


def test_conversion_picks_the_best_order_and_rejects_bad_delta():
    # Prepare
    orders = (2, 4, 8, 16, 32)
    rdp = np.array([a / 2.0 for a in orders])  # sigma = 1, one round
    # Execute
    eps, best = epsilon_from_rdp(rdp, orders, 1e-5)
    # Assert
    candidates = [
        r + math.log1p(-1 / a) - (math.log(1e-5) + math.log(a)) / (a - 1)
        for r, a in zip(rdp, orders, strict=False)
    ]
    assert eps == pytest.approx(min(candidates))
    assert best == orders[int(np.argmin(candidates))]
    with pytest.raises(ValueError, match="delta"):
        epsilon_from_rdp(rdp, orders, 1.5)


def test_accountant_composes_rounds_additively():
    # Prepare
    accountant = RdpAccountant(noise_multiplier=1.0)
    # Execute
    accountant.step(5)
    accountant.step(5)
    # Assert
    assert accountant.epsilon(1e-5) == pytest.approx(epsilon_after(1.0, 10, 1e-5))
    assert RdpAccountant(1.0).epsilon(1e-5) == 0.0
    assert math.isinf(epsilon_after(0.0, 10, 1e-5))
