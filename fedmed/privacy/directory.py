"""The run's key directory: parties, public keys, graph, threshold, and the floors.

The directory is the only run-level state the server hands out. Each party
checks it against its *own* configuration (:class:`Floor`): the server
proposes the threshold and the graph degree, the parties decide whether
they are safe enough, and refuse with :class:`ProtocolError` otherwise.

Why a two-thirds threshold. A party reveals, for each neighbour of a round,
exactly one secret: a Shamir share of the neighbour's self-mask seed if
the server lists it as a survivor, or their pair's round mask key if it is
listed as dropped. To unmask party ``P`` the server needs ``t`` seed shares
*and* the round mask keys of all ``k`` of ``P``'s pairs. A neighbour that
gave a seed share did not give its pair key, so ``P`` itself must have been
told that that neighbour dropped; but ``P`` refuses any request in which
fewer than ``t`` of its neighbours survive, so it reveals at most ``k - t``
pair keys. An equivocating server (different survivor lists for different
parties) thus needs ``t <= k - t`` honest revealers of both kinds, and
``c`` colluding neighbours (which give both) lower that to ``t - c <= k - t``.
Hence ``2t > k + c``: ``t = ceil(2k/3)`` tolerates ``c < k/3`` colluding
neighbours while up to ``k/3`` neighbours may drop out. Below ``t > k/2``
an equivocating server unmasks a party with no colluder at all, so parties
never accept a fraction of one half or less.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property

from fedmed.privacy import graph
from fedmed.privacy.errors import ProtocolError
from fedmed.privacy.messages import KeyDirectory

MIN_RUN_ID_BYTES = 16
DEFAULT_THRESHOLD_FRACTION = 2 / 3


def _fraction(value: float) -> Fraction:
    return Fraction(value).limit_denominator(10**6)


def default_threshold(degree: int, fraction: float = DEFAULT_THRESHOLD_FRACTION) -> int:
    """Smallest threshold a party accepts among ``degree`` neighbours: ``ceil(f k)``."""
    return max(1, math.ceil(_fraction(fraction) * degree))


@dataclass(frozen=True)
class Floor:
    """What a party requires of a run, from its own configuration.

    Args:
        min_threshold_fraction: ``t >= ceil(f k)`` of a party's ``k``
            neighbours; must be above one half (module doc).
        min_parties: fewest parties in the directory, in a round and among
            the survivors. Setting it to the number of sites a deployment
            expects also denies the server any choice of which sites'
            keys make up the directory (and hence the graph).
    """

    min_threshold_fraction: float = DEFAULT_THRESHOLD_FRACTION
    min_parties: int = 2

    def __post_init__(self) -> None:
        if not 0.5 < self.min_threshold_fraction <= 1:
            raise ValueError(
                "min_threshold_fraction must be in (1/2, 1]: at 1/2 or below a "
                "server that shows different survivor lists to different parties "
                "can unmask a party's input; found "
                f"{self.min_threshold_fraction}"
            )
        if self.min_parties < 2:
            raise ValueError(
                f"min_parties must be >= 2 (a sum over one party is its input), "
                f"found {self.min_parties}"
            )

    def check(self, directory: Directory) -> None:
        """Refuse (ProtocolError) a directory below this party's floor."""
        n, k, t = len(directory.parties), directory.degree, directory.threshold
        if n < self.min_parties:
            raise ProtocolError(
                f"key directory lists {n} parties, fewer than this party's "
                f"min_parties={self.min_parties}; refusing the run"
            )
        floor = default_threshold(k, self.min_threshold_fraction)
        if not floor <= t <= k:
            raise ProtocolError(
                f"key directory sets threshold {t} among {k} neighbours; this party "
                f"requires at least {floor} (min_threshold_fraction="
                f"{self.min_threshold_fraction:.4g}) and at most {k}; refusing: "
                "a lower threshold would let the server unmask a party by lying "
                "about who dropped out"
            )

    def check_count(self, what: str, count: int, round_id: int) -> None:
        if count < self.min_parties:
            raise ProtocolError(
                f"round {round_id}: {count} {what}, fewer than this party's "
                f"min_parties={self.min_parties}; refusing"
            )


@dataclass(frozen=True)
class Directory:
    """Validated view of a :class:`KeyDirectory`, with its digest and graph.

    Shamir points are ``x = 1 + position`` of a party in ``parties``.
    """

    run_id: bytes
    threshold: int
    degree: int
    parties: tuple[int, ...]
    public_keys: tuple[bytes, ...]
    _positions: dict[int, int] = field(init=False, repr=False, compare=False)
    _neighbours: dict[int, tuple[int, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        n = len(self.parties)
        if list(self.parties) != sorted(set(self.parties)) or any(
            not 0 <= p < 2**64 for p in self.parties
        ):
            raise ProtocolError(
                "key directory: party ids must be distinct, sorted integers in "
                f"[0, 2**64), found {self.parties}"
            )
        if n < 2:
            raise ProtocolError(
                f"key directory: secure aggregation needs at least 2 parties, found {n}"
            )
        if len(self.run_id) < MIN_RUN_ID_BYTES:
            raise ProtocolError(
                f"key directory: run id must be >= {MIN_RUN_ID_BYTES} random bytes"
            )
        if len(set(self.public_keys)) != n:
            raise ProtocolError("key directory: public keys are not all distinct")
        try:
            graph.check_degree(n, self.degree)
        except ValueError as error:
            raise ProtocolError(f"key directory: {error}") from None
        if not 1 <= self.threshold <= self.degree:
            raise ProtocolError(
                f"key directory: threshold must be in [1, {self.degree}], "
                f"found {self.threshold}"
            )
        positions = {p: i for i, p in enumerate(self.parties)}
        object.__setattr__(self, "_positions", positions)
        near = graph.neighbour_ids(self.digest, self.parties, self.degree)
        object.__setattr__(self, "_neighbours", near)

    @classmethod
    def from_message(cls, message: KeyDirectory) -> Directory:
        return cls(
            message.run_id,
            message.threshold,
            message.degree,
            message.parties,
            message.public_keys,
        )

    def to_message(self) -> KeyDirectory:
        return KeyDirectory(
            self.run_id, self.threshold, self.degree, self.parties, self.public_keys
        )

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 of everything in the directory (seeds the graph, binds shares)."""
        n = len(self.parties)
        head = struct.pack(">QqqQ", len(self.run_id), self.threshold, self.degree, n)
        body = b"".join(struct.pack(">Q", p) for p in self.parties)
        material = b"fedmed/secagg/v2/directory" + head + self.run_id + body
        return hashlib.sha256(material + b"".join(self.public_keys)).digest()

    def position(self, party: int) -> int:
        try:
            return self._positions[party]
        except KeyError:
            raise ProtocolError(f"party {party} is not in the key directory") from None

    def public_key(self, party: int) -> bytes:
        return self.public_keys[self.position(party)]

    def point(self, party: int) -> int:
        """Shamir x-coordinate of ``party``."""
        return 1 + self.position(party)

    def neighbours(self, party: int) -> tuple[int, ...]:
        """``party``'s neighbours in the graph, in directory order."""
        self.position(party)
        return self._neighbours[party]

    def check_member(self, party: int, public_key: bytes) -> None:
        """The party is listed with exactly the key it advertised."""
        if self.public_key(party) != public_key:
            raise ProtocolError(
                f"key directory lists another public key for party {party} than it "
                "advertised; refusing the run (possible key substitution)"
            )

    # ------------------------------------------------------------ bitmaps
    def bitmap(self, members: Iterable[int]) -> bytes:
        """One bit per directory position (bit ``i % 8`` of byte ``i // 8``)."""
        bits = bytearray((len(self.parties) + 7) // 8)
        for party in members:
            i = self.position(party)
            bits[i // 8] |= 1 << (i % 8)
        return bytes(bits)

    def members(self, bitmap: bytes, what: str) -> tuple[int, ...]:
        """The parties whose bits are set; malformed bitmaps raise ProtocolError."""
        n = len(self.parties)
        if len(bitmap) != (n + 7) // 8:
            raise ProtocolError(
                f"{what}: bitmap of {len(bitmap)} bytes, expected {(n + 7) // 8} "
                f"for {n} parties"
            )
        value = int.from_bytes(bitmap, "little")
        if value >> n:
            raise ProtocolError(f"{what}: bits set beyond the directory's {n} parties")
        return tuple(p for i, p in enumerate(self.parties) if value >> i & 1)
