"""The neighbour graph: whom each party masks with and shares its seed to (SecAgg+).

Bell et al. 2020 ("Secure Single-Server Aggregation with (Poly)Logarithmic
Overhead") replace the complete graph of Bonawitz et al. 2017 by a sparse
random graph of degree ``k = O(log n)``: a party adds pairwise masks only
with its ``k`` neighbours and Shamir-shares its self-mask seed only to them,
so per-round work and bytes grow with ``k`` instead of ``n``. The masks
still cancel in the sum because the graph is undirected.

The graph here is a circulant graph on a pseudo-random ordering of the
parties: every party sits on a ring at a pseudo-random position and is
joined to the parties ``j`` places away on either side for ``k / 2``
pseudo-random jump lengths ``j``. This is exactly ``k``-regular and
symmetric, and random circulant graphs with ``O(log n)`` jumps are expanders
with high probability (Alon and Roichman 1994), so small sets of parties
have many neighbours outside them. With ``k = n - 1`` (the default up to 13
parties) the graph is complete.

The ordering and the jumps come from SHAKE-256 of the key directory's
digest, which covers the run id (sent by the server before any key existed)
and every party's fresh public key. The server therefore cannot pick the
graph, nor give one party a neighbourhood of its choosing: every party
derives the whole graph itself from the directory and checks every message
against its own derivation.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

_LOG_FACTOR = 1.5


def default_degree(num_parties: int) -> int:
    """Smallest degree parties accept: ``k = min(n - 1, 2 ceil(1.5 log2 n))``.

    ``n = 10`` -> 9 (complete), ``50`` -> 18, ``100`` -> 20, ``1000`` -> 30.
    Each survivor tolerates ``k - t`` dropped neighbours (about a third), so
    the global dropout rate must stay clearly below a third for random
    neighbourhoods to stay within it; larger ``k`` concentrates better at
    ``80 k`` bytes per party and round (see docs/secure-aggregation.md).
    """
    if num_parties < 2:
        raise ValueError(f"a graph needs at least 2 parties, found {num_parties}")
    sparse = 2 * math.ceil(_LOG_FACTOR * math.log2(num_parties))
    return min(num_parties - 1, sparse)


def check_degree(num_parties: int, degree: int) -> None:
    """``degree`` can be built and is at least :func:`default_degree` (ValueError)."""
    floor = default_degree(num_parties)
    if not floor <= degree <= num_parties - 1:
        raise ValueError(
            f"graph degree must be in [{floor}, {num_parties - 1}] for "
            f"{num_parties} parties, found {degree}"
        )
    if degree != num_parties - 1 and degree % 2:
        raise ValueError(
            f"a sparse graph's degree must be even (k/2 jumps each way), "
            f"found {degree} for {num_parties} parties"
        )


class _Stream:
    """Uniform integers from SHAKE-256(seed | label), by rejection sampling."""

    def __init__(self, seed: bytes, label: bytes):
        self._bytes = hashlib.shake_256(seed + label)
        self._taken = 0
        self._buffer = b""

    def _next_u64(self) -> int:
        if len(self._buffer) < 8:
            self._taken += 4096
            self._buffer = self._bytes.digest(self._taken)[-4096:]
        value, self._buffer = self._buffer[:8], self._buffer[8:]
        return int.from_bytes(value, "big")

    def below(self, bound: int) -> int:
        """A uniform integer in ``[0, bound)``."""
        limit = (2**64 // bound) * bound
        while True:
            value = self._next_u64()
            if value < limit:
                return value % bound


def neighbour_positions(seed: bytes, num_parties: int, degree: int) -> list[list[int]]:
    """Neighbours of every directory position, each list sorted (see module doc)."""
    check_degree(num_parties, degree)
    everyone = range(num_parties)
    if degree == num_parties - 1:
        return [[q for q in everyone if q != p] for p in everyone]
    order = list(everyone)
    stream = _Stream(seed, b"fedmed/secagg/v2/graph-order")
    for i in range(num_parties - 1, 0, -1):  # Fisher-Yates
        j = stream.below(i + 1)
        order[i], order[j] = order[j], order[i]
    candidates = list(range(1, (num_parties - 1) // 2 + 1))  # no antipodal jump
    stream = _Stream(seed, b"fedmed/secagg/v2/graph-jumps")
    jumps = []
    for _ in range(degree // 2):
        jumps.append(candidates.pop(stream.below(len(candidates))))
    ring_of = {party: slot for slot, party in enumerate(order)}
    return [
        sorted(
            order[(ring_of[p] + sign * jump) % num_parties]
            for jump in jumps
            for sign in (1, -1)
        )
        for p in everyone
    ]


def neighbour_ids(
    seed: bytes, parties: Sequence[int], degree: int
) -> dict[int, tuple[int, ...]]:
    """Neighbours of every party id, in directory order."""
    positions = neighbour_positions(seed, len(parties), degree)
    return {
        parties[p]: tuple(parties[q] for q in near) for p, near in enumerate(positions)
    }
