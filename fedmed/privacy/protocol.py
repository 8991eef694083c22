"""In-process secure aggregation: parties and server wired by direct calls.

This is the reference order of the messages (what a Flower strategy does over
the network) and the harness of the tests, the benchmark and the in-process
VFL driver. Every message can be sent through its byte form
(``through_bytes=True``) to prove nothing depends on shared Python objects,
and a :class:`Traffic` tally counts each message's payload bytes.

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
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from fedmed.privacy.fixed_point import FixedPointCodec
from fedmed.privacy.messages import WireMessage
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


def _send(message: M, through_bytes: bool, traffic: Traffic | None) -> M:
    if traffic is not None:
        traffic.record(message)
    return type(message).from_bytes(message.to_bytes()) if through_bytes else message


def setup_inprocess(
    party_ids: Sequence[int],
    threshold: int | None = None,
    through_bytes: bool = False,
    traffic: Traffic | None = None,
) -> tuple[SecAggServer, dict[int, SecAggParty]]:
    """Run the once-per-run key setup between fresh parties and a fresh server."""
    parties = {pid: SecAggParty(pid) for pid in party_ids}
    server = SecAggServer(threshold=threshold)
    ads = [_send(p.advertise(), through_bytes, traffic) for p in parties.values()]
    directory = server.receive_advertisements(ads)
    bundles = []
    for party in parties.values():
        received = _send(directory, through_bytes, traffic)
        bundles.append(_send(party.receive_directory(received), through_bytes, traffic))
    for pid, delivery in server.route_setup_shares(bundles).items():
        parties[pid].receive_setup_shares(_send(delivery, through_bytes, traffic))
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
    """One round: every active party masks its vector, the server unmasks the sum.

    ``drop_before_masking`` parties never send their masked input (their
    pairwise masks are recovered); ``drop_before_unmasking`` parties send it
    but do not answer the unmask request (their input still counts).
    """
    request = server.mask_request(round_id)
    inputs = []
    for pid in request.active:
        received = _send(request, through_bytes, traffic)
        masked = parties[pid].mask(received, vectors[pid], codec)
        if pid not in drop_before_masking:
            inputs.append(_send(masked, through_bytes, traffic))
    unmask_requests = server.route_masked_inputs(inputs)
    responses = [
        _send(
            parties[pid].unmask(_send(req, through_bytes, traffic)),
            through_bytes,
            traffic,
        )
        for pid, req in unmask_requests.items()
        if pid not in drop_before_unmasking
    ]
    return server.unmask(responses)
