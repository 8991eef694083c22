"""Shamir sharing: any t shares recover the secret, fewer or altered ones fail."""

from __future__ import annotations

import itertools

import pytest

from fedmed.privacy import RecoveryFailed, shamir


def test_any_threshold_subset_recovers_the_secret():
    # Prepare
    secret = shamir.random_secret()
    xs = [1, 2, 3, 4, 5]
    shares = shamir.split(secret, 3, xs)
    points = list(zip(xs, shares, strict=True))
    # Execute / Assert
    for subset in itertools.combinations(points, 3):
        assert shamir.reconstruct(list(subset), 3, "test") == secret


def test_fewer_than_threshold_shares_fail_clearly():
    # Prepare
    shares = shamir.split(12345, 3, [1, 2, 3])
    # Execute / Assert
    with pytest.raises(RecoveryFailed, match="2 shares revealed, at least 3 needed"):
        shamir.reconstruct([(1, shares[0]), (2, shares[1])], 3, "test")


def test_altered_extra_share_is_detected():
    # Prepare
    xs = [1, 2, 3, 4]
    shares = shamir.split(999, 2, xs)
    points = list(zip(xs, shares, strict=True))
    points[3] = (4, (shares[3] + 1) % shamir.PRIME)
    # Execute / Assert
    with pytest.raises(RecoveryFailed, match="inconsistent"):
        shamir.reconstruct(points, 2, "test")
