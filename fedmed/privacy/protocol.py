"""The secure-aggregation message order, shared by every transport.

:func:`run_setup` and :func:`secure_sum` drive a :class:`SecAggServer`
through a :class:`PartyChannel`, which carries each batch of messages to the
parties and brings back their replies. :class:`InProcessChannel` calls the
parties directly (tests, benchmarks, the in-process VFL driver); a Flower
strategy implements the same channel with Message-API round trips. Every
in-process message can be sent through its byte form (``through_bytes=True``)
to prove nothing depends on shared Python objects, and a :class:`Traffic`
tally counts each message's payload bytes.

Message flow (arrows are network messages; ``n`` parties, threshold ``t``)::

    setup (once per run)
      party  -> server  KeyAdvertisement       2 x 32-byte public keys
      server -> party   KeyDirectory           ids, public keys, t, run id
      party  -> server  SetupShares            n-1 encrypted mask-key shares
      server -> party   SetupSharesDelivery    the shares addressed to it
    each round r
      server -> party   MaskRequest            r, active ids
      party  -> server  MaskedInput            masked vector, codec, n-1 shares
      server -> party   UnmaskRequest          survivors, dropped, its shares
      party  -> server  UnmaskResponse         revealed shares

A party missing from a channel's replies counts as dropped at that step: no
masked input means its pairwise masks are recovered and it leaves the run;
no unmask response is tolerated while ``t`` parties still answer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from fedmed.privacy.fixed_point import FixedPointCodec
from fedmed.privacy.messages import (
    KeyAdvertisement,
    KeyDirectory,
    MaskedInput,
    MaskRequest,
    SetupShares,
    SetupSharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
    WireMessage,
)
from fedmed.privacy.party import SecAggParty
from fedmed.privacy.server import SecAggServer, SecureSum

M = TypeVar("M", bound=WireMessage)


@dataclass
class Traffic:
    """Payload bytes per message type and direction (``up`` = to the server)."""

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
    """How the server's messages reach the parties (replies keyed by party id)."""

    def advertise(self, parties: Sequence[int]) -> dict[int, KeyAdvertisement]: ...

    def share(
        self, directory: KeyDirectory, parties: Sequence[int]
    ) -> dict[int, SetupShares]: ...

    def deliver(self, deliveries: Mapping[int, SetupSharesDelivery]) -> None: ...

    def mask(
        self, request: MaskRequest, job: Any
    ) -> dict[int, MaskedInput]: ...  # ``job``: what the parties compute this round

    def unmask(
        self, requests: Mapping[int, UnmaskRequest]
    ) -> dict[int, UnmaskResponse]: ...


def run_setup(
    server: SecAggServer, channel: PartyChannel, parties: Sequence[int]
) -> tuple[int, ...]:
    """The once-per-run key setup; returns the participants."""
    ads = channel.advertise(parties)
    directory = server.receive_advertisements(list(ads.values()))
    bundles = channel.share(directory, sorted(ads))
    channel.deliver(server.route_setup_shares(list(bundles.values())))
    return server.active


def secure_sum(
    server: SecAggServer, channel: PartyChannel, round_id: int, job: Any = None
) -> SecureSum:
    """One round: the active parties mask their vectors, the server unmasks the sum."""
    request = server.mask_request(round_id)
    inputs = channel.mask(request, job)
    unmask_requests = server.route_masked_inputs(list(inputs.values()))
    return server.unmask(list(channel.unmask(unmask_requests).values()))


@dataclass
class InProcessChannel:
    """Parties in this process; ``vectors(pid, job)`` is what party ``pid`` sums.

    ``drop_before_masking`` parties mask but never send (their pairwise masks
    are recovered); ``drop_before_unmasking`` parties send but do not answer
    the unmask request (their input still counts).
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

    def advertise(self, parties: Sequence[int]) -> dict[int, KeyAdvertisement]:
        return {p: self._send(self.parties[p].advertise()) for p in parties}

    def share(
        self, directory: KeyDirectory, parties: Sequence[int]
    ) -> dict[int, SetupShares]:
        return {
            p: self._send(self.parties[p].receive_directory(self._send(directory)))
            for p in parties
        }

    def deliver(self, deliveries: Mapping[int, SetupSharesDelivery]) -> None:
        for pid, delivery in deliveries.items():
            self.parties[pid].receive_setup_shares(self._send(delivery))

    def mask(self, request: MaskRequest, job: Any) -> dict[int, MaskedInput]:
        if self.vectors is None or self.codec is None:
            raise ValueError("InProcessChannel.mask needs vectors and a codec")
        inputs = {}
        for pid in request.active:
            received = self._send(request)
            masked = self.parties[pid].mask(
                received, self.vectors(pid, job), self.codec
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
) -> tuple[SecAggServer, dict[int, SecAggParty]]:
    """Run the once-per-run key setup between fresh parties and a fresh server."""
    parties = {pid: SecAggParty(pid) for pid in party_ids}
    server = SecAggServer(threshold=threshold)
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
