"""The run's key directory: who takes part, their public keys, the threshold."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fedmed.privacy.errors import ProtocolError
from fedmed.privacy.messages import KeyDirectory

MIN_RUN_ID_BYTES = 16


def default_threshold(num_parties: int) -> int:
    """Shamir threshold ``t = max(2, ceil(2n/3))``: up to ``n - t`` dropouts per round.

    A two-thirds majority is the usual choice against a server that may lie
    about who dropped (Bonawitz et al. 2017, Sec. 6); ``t >= 2`` because a
    sum over one party is that party's value.
    """
    return min(num_parties, max(2, -(-2 * num_parties // 3)))


@dataclass(frozen=True)
class Directory:
    """Validated view of a :class:`KeyDirectory` message.

    Shamir points are ``x = 1 + position`` of a party in ``parties``.
    """

    run_id: bytes
    threshold: int
    parties: tuple[int, ...]
    mask_publics: tuple[bytes, ...]
    share_publics: tuple[bytes, ...]

    def __post_init__(self) -> None:
        n = len(self.parties)
        if len(set(self.parties)) != n or any(not 0 <= p < 2**64 for p in self.parties):
            raise ProtocolError(
                "key directory: party ids must be distinct integers in [0, 2**64), "
                f"found {self.parties}"
            )
        if n < 2:
            raise ProtocolError(
                f"key directory: secure aggregation needs at least 2 parties, found {n}"
            )
        if not 2 <= self.threshold <= n:
            raise ProtocolError(
                f"key directory: threshold must be in [2, {n}], found {self.threshold}"
            )
        if len(self.run_id) < MIN_RUN_ID_BYTES:
            raise ProtocolError(
                f"key directory: run id must be >= {MIN_RUN_ID_BYTES} random bytes"
            )
        keys = self.mask_publics + self.share_publics
        if len(set(keys)) != len(keys):
            raise ProtocolError("key directory: public keys are not all distinct")

    @classmethod
    def from_message(cls, message: KeyDirectory) -> Directory:
        return cls(
            message.run_id,
            message.threshold,
            message.parties,
            message.mask_publics,
            message.share_publics,
        )

    def to_message(self) -> KeyDirectory:
        return KeyDirectory(
            self.run_id,
            self.threshold,
            self.parties,
            self.mask_publics,
            self.share_publics,
        )

    def _index(self, party: int) -> int:
        try:
            return self.parties.index(party)
        except ValueError:
            raise ProtocolError(f"party {party} is not in the key directory") from None

    def mask_public(self, party: int) -> bytes:
        return self.mask_publics[self._index(party)]

    def share_public(self, party: int) -> bytes:
        return self.share_publics[self._index(party)]

    def points(self, parties: Iterable[int]) -> list[int]:
        """Shamir x-coordinates of ``parties``."""
        return [1 + self._index(p) for p in parties]

    def check_member(self, party: int, mask_public: bytes, share_public: bytes) -> None:
        """The party is listed with exactly the keys it advertised."""
        if (self.mask_public(party), self.share_public(party)) != (
            mask_public,
            share_public,
        ):
            raise ProtocolError(
                f"key directory lists other public keys for party {party} than it "
                "advertised; refusing the run (possible key substitution)"
            )

    def check_subset(self, parties: Iterable[int], what: str) -> tuple[int, ...]:
        """``parties`` sorted, distinct and all in the directory."""
        members = tuple(sorted(parties))
        if len(set(members)) != len(members):
            raise ProtocolError(f"{what} {members} repeat a party")
        unknown = sorted(set(members) - set(self.parties))
        if unknown:
            raise ProtocolError(
                f"{what} include parties {unknown} not in the directory"
            )
        return members
