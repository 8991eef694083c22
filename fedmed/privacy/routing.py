"""What the server checks and forwards in a round (used by :class:`SecAggServer`).

Per-neighbour entries travel without party ids: row ``i`` of a masked
input's ``shares`` is for the sender's ``i``-th round neighbour, row ``i``
of an unmask request's ``shares`` comes from the recipient's ``i``-th
surviving neighbour, and an unmask response lists seed shares and pair keys
in the order of the sender's surviving and dropped neighbours. Both ends
derive those orders from the key directory, so the server's checks here
are about counts, round ids and codecs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedmed.privacy.directory import Directory
from fedmed.privacy.errors import ProtocolError, RecoveryFailed
from fedmed.privacy.fixed_point import FixedPointCodec
from fedmed.privacy.messages import MaskedInput, UnmaskResponse

logger = logging.getLogger(__name__)


@dataclass
class OpenRound:
    """The server's bookkeeping of the round in progress."""

    round_id: int
    active: tuple[int, ...]
    neighbours: dict[int, tuple[int, ...]]  # active party -> its round neighbours
    survivors: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()
    codec: FixedPointCodec | None = None
    total: np.ndarray | None = None
    alive: dict[int, tuple[int, ...]] = field(default_factory=dict)
    gone: dict[int, tuple[int, ...]] = field(default_factory=dict)


def prune(directory: Directory, parties: Sequence[int], what: str) -> tuple[int, ...]:
    """``parties`` without those (recursively) left with fewer than ``t`` neighbours.

    Such a party could not share its self-mask seed (opening a round) or get
    its self mask removed (after masked inputs); it is treated as dropped.
    """
    kept = set(parties)
    while True:
        thin = {
            p
            for p in kept
            if sum(q in kept for q in directory.neighbours(p)) < directory.threshold
        }
        if not thin:
            break
        logger.warning(
            "%s: parties %s have fewer than %d neighbours left and are left out",
            what,
            sorted(thin),
            directory.threshold,
        )
        kept -= thin
    if len(kept) < 2:
        raise RecoveryFailed(
            f"{what}: {len(kept)} of {len(parties)} parties keep at least "
            f"{directory.threshold} neighbours, at least 2 needed; too many "
            "parties dropped out for a secure sum"
        )
    return tuple(p for p in directory.parties if p in kept)


def check_inputs(
    directory: Directory, current: OpenRound, inputs: Sequence[MaskedInput]
) -> dict[int, MaskedInput]:
    """The round's masked inputs by sender (directory order), after every check."""
    round_id = current.round_id
    if not inputs:
        raise RecoveryFailed(f"round {round_id}: no masked input arrived")
    by_sender = {m.sender: m for m in inputs}
    strangers = sorted(set(by_sender) - set(current.active))
    if strangers or len(by_sender) != len(inputs):
        raise ProtocolError(
            f"round {round_id}: masked inputs from {sorted(m.sender for m in inputs)}; "
            f"each must come once from a party active in the round "
            f"(not from {strangers})"
        )
    first = inputs[0]
    codec = (first.bits, first.value_range, first.num_summands)
    for message in inputs:
        if message.round_id != round_id or (
            (message.bits, message.value_range, message.num_summands) != codec
        ):
            raise ProtocolError(
                f"round {round_id}: party {message.sender} sent round "
                f"{message.round_id} with codec ({message.bits} bits, range "
                f"{message.value_range}, {message.num_summands} summands); all "
                "parties must use this round's id and one codec"
            )
        if message.masked.shape != first.masked.shape or message.masked.dtype != (
            np.dtype(f"uint{first.bits}")
        ):
            raise ProtocolError(
                f"round {round_id}: party {message.sender} sent a masked vector of "
                f"shape {message.masked.shape} and dtype {message.masked.dtype}, "
                f"expected {first.masked.shape} uint{first.bits}"
            )
        expected = len(current.neighbours[message.sender])
        if len(message.shares) != expected:
            raise ProtocolError(
                f"round {round_id}: party {message.sender} sealed "
                f"{len(message.shares)} seed shares, expected one for each of its "
                f"{expected} round neighbours"
            )
    if len(inputs) > first.num_summands:
        raise ProtocolError(
            f"round {round_id}: {len(inputs)} inputs exceed the codec's "
            f"{first.num_summands} summands; the sum could overflow"
        )
    return {p: by_sender[p] for p in directory.parties if p in by_sender}


def route_shares(
    current: OpenRound, by_sender: dict[int, MaskedInput], recipient: int
) -> tuple[bytes, ...]:
    """The sealed seed shares for ``recipient`` from its surviving neighbours."""
    return tuple(
        by_sender[sender].shares[current.neighbours[sender].index(recipient)]
        for sender in current.alive[recipient]
    )


def check_responses(
    directory: Directory, current: OpenRound, responses: Sequence[UnmaskResponse]
) -> dict[int, UnmaskResponse]:
    """The unmask responses by sender, each of the expected round and shape."""
    answers: dict[int, UnmaskResponse] = {}
    for response in responses:
        sender = response.sender
        if (
            response.round_id != current.round_id
            or sender not in current.survivors
            or sender in answers
        ):
            raise ProtocolError(
                f"round {current.round_id}: unmask response from party {sender} "
                f"for round {response.round_id} is not expected"
            )
        shape = (len(response.self_mask_shares), len(response.pair_keys))
        expected = (len(current.alive[sender]), len(current.gone[sender]))
        if shape != expected:
            raise ProtocolError(
                f"round {current.round_id}: party {sender} revealed {shape[0]} seed "
                f"shares and {shape[1]} pair keys, expected {expected[0]} and "
                f"{expected[1]} (one per surviving / dropped neighbour)"
            )
        answers[sender] = response
    return answers
