"""Shamir t-of-n secret sharing over the prime field GF(2**127 - 1).

Shamir (1979): a secret ``s`` is the constant term of a random polynomial of
degree ``t - 1``; party ``k`` receives the point ``(x_k, f(x_k))``. Any ``t``
points give ``s`` by Lagrange interpolation at 0; fewer reveal nothing about
it. The field is the Mersenne prime ``2**127 - 1``, so each secret (a 127-bit
seed) and each share travel as 16 bytes. Coefficients come from
``secrets.randbelow`` (the OS CSPRNG).

With more than ``t`` points, :func:`reconstruct` also checks that every extra
point lies on the interpolated polynomial, which detects a wrong or modified
revealed share instead of silently producing a wrong secret.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from fedmed.privacy.errors import RecoveryFailed

PRIME = 2**127 - 1
SHARE_BYTES = 16


def random_secret() -> int:
    """A uniformly random field element, used as a 127-bit seed."""
    return secrets.randbelow(PRIME)


def split(secret: int, threshold: int, xs: Sequence[int]) -> list[int]:
    """Share ``secret`` so that any ``threshold`` of the points ``xs`` recover it.

    Returns the share values ``f(x)`` in the order of ``xs``.
    """
    if not 0 <= secret < PRIME:
        raise ValueError("secret must be a field element in [0, 2**127 - 1)")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in [1, {len(xs)}], found {threshold}")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError(f"share points must be distinct and non-zero, found {xs}")
    coefficients = [secret] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return [_evaluate(coefficients, x) for x in xs]


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    """Horner evaluation of the polynomial at ``x`` modulo PRIME."""
    value = 0
    for coefficient in reversed(coefficients):
        value = (value * x + coefficient) % PRIME
    return value


def lagrange_weights(xs: Sequence[int]) -> list[int]:
    """``1 / prod_{j != i} (x_i - x_j)`` for each point (one inverse each)."""
    weights = []
    for i, x_i in enumerate(xs):
        denominator = 1
        for j, x_j in enumerate(xs):
            if i != j:
                denominator = denominator * (x_i - x_j) % PRIME
        weights.append(pow(denominator, -1, PRIME))
    return weights


def interpolate(
    points: Sequence[tuple[int, int]], at: int, weights: Sequence[int] | None = None
) -> int:
    """Value at ``at`` of the unique polynomial through ``points`` (Lagrange).

    ``weights`` from :func:`lagrange_weights` of the points' x may be passed
    to evaluate one polynomial at several places without new inverses.
    """
    if weights is None:
        weights = lagrange_weights([x for x, _ in points])
    factors = [(at - x) % PRIME for x, _ in points]
    before = [1] * (len(points) + 1)  # prefix products of the factors
    for i, factor in enumerate(factors):
        before[i + 1] = before[i] * factor % PRIME
    total, after = 0, 1
    for i in range(len(points) - 1, -1, -1):
        numerator = before[i] * after % PRIME
        total = (total + points[i][1] * numerator * weights[i]) % PRIME
        after = after * factors[i] % PRIME
    return total


def reconstruct(points: Sequence[tuple[int, int]], threshold: int, owner: str) -> int:
    """Recover a secret from at least ``threshold`` shares, checking any extras.

    Raises:
        RecoveryFailed: fewer than ``threshold`` shares, or shares that do not
            lie on one polynomial of degree ``threshold - 1``.
    """
    if len({x for x, _ in points}) != len(points):
        raise RecoveryFailed(
            f"{owner}: duplicate share points {[x for x, _ in points]}"
        )
    if len(points) < threshold:
        raise RecoveryFailed(
            f"{owner}: {len(points)} shares revealed, at least {threshold} needed; "
            "too many parties dropped out for this round to be unmasked"
        )
    basis = list(points[:threshold])
    weights = lagrange_weights([x for x, _ in basis])
    for x, y in points[threshold:]:
        if interpolate(basis, x, weights) != y:
            raise RecoveryFailed(
                f"{owner}: the share at point {x} is inconsistent with the others "
                "(a revealed share was altered); the round cannot be trusted"
            )
    return interpolate(basis, 0, weights)


def to_bytes(value: int) -> bytes:
    """Fixed-width big-endian encoding of a field element."""
    return value.to_bytes(SHARE_BYTES, "big")


def from_bytes(data: bytes) -> int:
    """Decode a field element; values outside the field are rejected."""
    if len(data) != SHARE_BYTES:
        raise ValueError(f"a share is {SHARE_BYTES} bytes, found {len(data)}")
    value = int.from_bytes(data, "big")
    if value >= PRIME:
        raise ValueError("share value is not a field element")
    return value
