"""The secure-aggregation message order, shared by every transport.

:func:`run_setup` and :func:`secure_sum` drive a :class:`SecAggServer`
through a :class:`PartyChannel`, which carries each batch of messages to the
parties and brings back their replies. :class:`InProcessChannel` calls the
parties directly (tests, benchmarks, the in-process VFL driver); a Flower
strategy implements the same channel with Message-API round trips. Every
in-process message can be sent through its byte form (``through_bytes=True``)
to prove nothing depends on shared Python objects, and a :class:`Traffic`
tally counts each message's payload bytes.

Message flow (arrows are network messages; ``n`` parties, ``k`` neighbours
each, threshold ``t`` among them; bytes per party, 32-bit ring, ``d``
values)::

    setup (once per run): 1 round trip
      server -> party   KeyRequest         run id (16)
      party  -> server  KeyAdvertisement   id, X25519 public key (40)
    each round r: 2 round trips
      server -> party   MaskRequest        run id, r, active bitmap (24 + n/8)
                        + KeyDirectory     first round only: ids, keys, t, k
                                           (32 + 40 n)
      party  -> server  MaskedInput        masked vector, codec, one sealed
                                           seed share per neighbour
                                           (40 + 4 d + 32 k)
      server -> party   UnmaskRequest      r, survivors bitmap, its neighbours'
                                           sealed shares (16 + n/8 + 32 k)
      party  -> server  UnmaskResponse     per neighbour a seed share (16) or,
                                           if it dropped, a pair key (32)

There is no per-round key material besides the seed shares: round mask
keys come from the run's key agreement through the per-round key schedule
of :mod:`fedmed.privacy.keys`. A round needs two round trips because the
server must know who dropped before it asks for reveals.

A party missing from a channel's replies counts as dropped at that step: no
masked input means its neighbours reveal their round pair keys with it (it
takes part again next round); no unmask response is tolerated while every
survivor keeps ``t`` answering neighbours and every survivor next to a
dropped party answers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from fedmed.privacy.directory import DEFAULT_THRESHOLD_FRACTION
from fedmed.privacy.fixed_point import FixedPointCodec
from fedmed.privacy.messages import (
    KeyAdvertisement,
    KeyRequest,
    MaskedInput,
    UnmaskRequest,
    UnmaskResponse,
    WireMessage,
)
from fedmed.privacy.party import SecAggParty
from fedmed.privacy.server import RoundStart, SecAggServer, SecureSum

M = TypeVar("M", bound=WireMessage)


@dataclass
class Traffic:
    """Payload bytes per message type (the type says the direction)."""

    bytes_by_message: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def record(self, message: WireMessage) -> None:
        self.bytes_by_message[type(message).__name__] += message.payload_bytes()

    @property
    def total(self) -> int:
        return sum(self.bytes_by_message.values())


def send(message: M, through_bytes: bool, traffic: Traffic | None) -> M:
    """Deliver one in-process message, optionally through bytes, and count it."""
    if traffic is not None:
        traffic.record(message)
    return type(message).from_bytes(message.to_bytes()) if through_bytes else message


class PartyChannel(Protocol):
    """How the server's messages reach the parties (replies keyed by party id).

    Each method is one round trip; a party that fails or times out is left
    out of the replies (a dropout at that step).
    """

    def advertise(
        self, request: KeyRequest, parties: Sequence[int]
    ) -> dict[int, KeyAdvertisement]: ...

    def mask(
        self, starts: Mapping[int, RoundStart], job: Any
    ) -> dict[int, MaskedInput]: ...  # ``job``: what the parties compute this round

    def unmask(
        self, requests: Mapping[int, UnmaskRequest]
    ) -> dict[int, UnmaskResponse]: ...


def run_setup(
    server: SecAggServer, channel: PartyChannel, parties: Sequence[int]
) -> tuple[int, ...]:
    """The once-per-run key setup (one round trip); returns the participants."""
    ads = channel.advertise(server.key_request(), parties)
    server.receive_advertisements(list(ads.values()))
    return server.participants


def secure_sum(
    server: SecAggServer,
    channel: PartyChannel,
    round_id: int,
    job: Any = None,
    parties: Collection[int] | None = None,
) -> SecureSum:
    """One round (two round trips): mask, then unmask only the sum."""
    inputs = channel.mask(server.open_round(round_id, parties), job)
    unmask_requests = server.route_masked_inputs(list(inputs.values()))
    return server.unmask(list(channel.unmask(unmask_requests).values()))


@dataclass
class InProcessChannel:
    """Parties in this process; ``vectors(pid, job)`` is what party ``pid`` sums.

    ``drop_before_masking`` parties mask but never send (their neighbours
    reveal the round's pair keys); ``drop_before_unmasking`` parties send but
    do not answer the unmask request (their input still counts).
    """

    parties: Mapping[int, SecAggParty]
    vectors: Callable[[int, Any], np.ndarray] | None = None
    codec: FixedPointCodec | None = None
    through_bytes: bool = False
    traffic: Traffic | None = None
    drop_before_masking: Collection[int] = ()
    drop_before_unmasking: Collection[int] = ()

    def _send(self, message: M) -> M:
        return send(message, self.through_bytes, self.traffic)

    def advertise(
        self, request: KeyRequest, parties: Sequence[int]
    ) -> dict[int, KeyAdvertisement]:
        return {
            p: self._send(self.parties[p].advertise(self._send(request)))
            for p in parties
        }

    def mask(
        self, starts: Mapping[int, RoundStart], job: Any
    ) -> dict[int, MaskedInput]:
        if self.vectors is None or self.codec is None:
            raise ValueError("InProcessChannel.mask needs vectors and a codec")
        inputs = {}
        for pid, start in starts.items():
            request = self._send(start.request)
            directory = start.directory and self._send(start.directory)
            masked = self.parties[pid].mask(
                request, self.vectors(pid, job), self.codec, directory
            )
            if pid not in self.drop_before_masking:
                inputs[pid] = self._send(masked)
        return inputs

    def unmask(
        self, requests: Mapping[int, UnmaskRequest]
    ) -> dict[int, UnmaskResponse]:
        return {
            pid: self._send(self.parties[pid].unmask(self._send(request)))
            for pid, request in requests.items()
            if pid not in self.drop_before_unmasking
        }


def setup_inprocess(
    party_ids: Sequence[int],
    threshold: int | None = None,
    through_bytes: bool = False,
    traffic: Traffic | None = None,
    *,
    degree: int | None = None,
    min_threshold_fraction: float = DEFAULT_THRESHOLD_FRACTION,
    min_parties: int = 2,
) -> tuple[SecAggServer, dict[int, SecAggParty]]:
    """Run the once-per-run key setup between fresh parties and a fresh server."""
    parties = {
        pid: SecAggParty(
            pid,
            min_threshold_fraction=min_threshold_fraction,
            min_parties=min_parties,
        )
        for pid in party_ids
    }
    server = SecAggServer(threshold=threshold, degree=degree)
    channel = InProcessChannel(parties, through_bytes=through_bytes, traffic=traffic)
    run_setup(server, channel, list(party_ids))
    return server, parties


def secure_sum_inprocess(
    server: SecAggServer,
    parties: Mapping[int, SecAggParty],
    round_id: int,
    vectors: Mapping[int, np.ndarray],
    codec: FixedPointCodec,
    drop_before_masking: Collection[int] = (),
    drop_before_unmasking: Collection[int] = (),
    through_bytes: bool = False,
    traffic: Traffic | None = None,
) -> SecureSum:
    """One round over in-process parties with precomputed ``vectors``."""
    channel = InProcessChannel(
        parties,
        lambda pid, _job: vectors[pid],
        codec,
        through_bytes,
        traffic,
        drop_before_masking,
        drop_before_unmasking,
    )
    return secure_sum(server, channel, round_id)
