"""The server's side of secure aggregation v2: it routes messages and learns only sums.

State machine (mirrors :mod:`fedmed.privacy.party`)::

    key_request() -> KeyRequest                               # to all, setup
    receive_advertisements([KeyAdvertisement]) -> KeyDirectory
    repeat: open_round(round_id) -> {party: RoundStart}       # MaskRequest
            route_masked_inputs([MaskedInput]) -> {party: UnmaskRequest}
            unmask([UnmaskResponse]) -> SecureSum

Dropout recovery (double masking, Bonawitz et al. 2017, over the neighbour
graph of Bell et al. 2020): parties whose masked input did not arrive are
*dropped*. Every survivor reveals, per round neighbour, either its share of
that neighbour's self-mask seed (the neighbour survived) or their round mask
key (it dropped). From ``t`` shares the server rebuilds each survivor's
seed and removes its self mask; with the revealed pair keys it removes the
masks survivors hold with dropped neighbours, which nothing else cancels.

So the round's sum needs: ``t`` answering neighbours per survivor, and an
answer from every survivor that has a dropped neighbour (only it holds that
pair key besides the dropped party). Otherwise :class:`RecoveryFailed`.
This is the price of revealing only round-bound pair keys instead of
Shamir shares of the dropped party's key, which a server lying about
dropouts could combine across neighbourhoods (docs/secure-aggregation.md).
A survivor whose neighbourhood is too thin (fewer than ``t`` surviving
neighbours) is left out of the sum like a dropped party. Dropped parties
take part again in the next round.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from fedmed.privacy import graph, shamir
from fedmed.privacy.directory import Directory, default_threshold
from fedmed.privacy.errors import ProtocolError, RecoveryFailed
from fedmed.privacy.fixed_point import FixedPointCodec
from fedmed.privacy.masking import add_masks, mask_sign, self_mask_key
from fedmed.privacy.messages import (
    KeyAdvertisement,
    KeyDirectory,
    KeyRequest,
    MaskedInput,
    MaskRequest,
    UnmaskRequest,
    UnmaskResponse,
)
from fedmed.privacy.routing import (
    OpenRound,
    check_inputs,
    check_responses,
    prune,
    route_shares,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class SecureSum:
    """The unmasked sum of one round and who contributed to it."""

    round_id: int
    values: np.ndarray  # float64, the decoded sum
    contributors: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass(frozen=True)
class RoundStart:
    """What opens a round at a party: the request (+ directory until it has it)."""

    request: MaskRequest
    directory: KeyDirectory | None = None


class SecAggServer:
    """The aggregator: runs the key setup, routes round messages, unmasks sums.

    Args:
        threshold: Shamir threshold among a party's neighbours; default
            ``ceil(2k/3)``. Parties refuse one below their own floor.
        degree: Neighbours per party ``k``; default
            :func:`fedmed.privacy.graph.default_degree` (parties refuse less).
        run_id: 16+ random bytes; fresh by default.
    """

    def __init__(
        self,
        threshold: int | None = None,
        degree: int | None = None,
        run_id: bytes | None = None,
    ):
        self._requested = (threshold, degree)
        self._run_id = run_id if run_id is not None else os.urandom(16)
        self._directory: Directory | None = None
        self._confirmed: set[int] = set()
        self._last_round = -1
        self._open: OpenRound | None = None

    @property
    def directory(self) -> Directory:
        if self._directory is None:
            raise ProtocolError("server: no key directory yet; run the setup first")
        return self._directory

    @property
    def participants(self) -> tuple[int, ...]:
        """Every party in the key directory (empty before the setup)."""
        return self._directory.parties if self._directory else ()

    @property
    def active(self) -> tuple[int, ...]:
        """Parties a round includes by default: all participants (dropouts rejoin)."""
        return self.participants

    # ------------------------------------------------------------------ setup
    def key_request(self) -> KeyRequest:
        """Setup 1: the run id, sent before any party makes its key public."""
        return KeyRequest(self._run_id)

    def receive_advertisements(self, ads: Sequence[KeyAdvertisement]) -> KeyDirectory:
        """Setup 2: the key directory, delivered with each party's first round."""
        ordered = sorted(ads, key=lambda ad: ad.party)
        n = len(ordered)
        if n < 2:
            raise ProtocolError(
                f"secure aggregation needs at least 2 parties, found {n} advertisements"
            )
        threshold, degree = self._requested
        degree = degree or graph.default_degree(n)
        self._directory = Directory(
            self._run_id,
            threshold or default_threshold(degree),
            degree,
            tuple(ad.party for ad in ordered),
            tuple(ad.public_key for ad in ordered),
        )
        logger.info(
            "secure aggregation: %d parties, %d neighbours each, threshold %d",
            n,
            degree,
            self._directory.threshold,
        )
        return self._directory.to_message()

    # ------------------------------------------------------------------ rounds
    def open_round(
        self, round_id: int, parties: Collection[int] | None = None
    ) -> dict[int, RoundStart]:
        """Round 1: open round ``round_id`` (strictly increasing) for ``parties``.

        ``parties`` defaults to every participant. Parties left with fewer
        than ``t`` active neighbours cannot share their seed and are left out.
        """
        directory = self.directory
        if round_id <= self._last_round:
            raise ProtocolError(
                f"server: round {round_id} is not after round {self._last_round}; "
                "secure-aggregation round ids must strictly increase"
            )
        wanted = directory.members(
            directory.bitmap(self.active if parties is None else parties), "parties"
        )
        active = prune(directory, wanted, f"round {round_id} opening")
        self._last_round = round_id
        self._open = OpenRound(
            round_id,
            active,
            {
                p: tuple(q for q in directory.neighbours(p) if q in active)
                for p in active
            },
        )
        request = MaskRequest(directory.run_id, round_id, directory.bitmap(active))
        message = directory.to_message()
        return {
            p: RoundStart(request, None if p in self._confirmed else message)
            for p in active
        }

    def route_masked_inputs(
        self, inputs: Sequence[MaskedInput]
    ) -> dict[int, UnmaskRequest]:
        """Round 2->3: add the masked vectors, route the seed shares to survivors."""
        current = self._current_round()
        by_sender = check_inputs(self.directory, current, inputs)
        self._confirmed |= set(by_sender)
        survivors = prune(
            self.directory, tuple(by_sender), f"round {current.round_id} masked inputs"
        )
        first = by_sender[survivors[0]]
        total = first.masked.copy()
        for party in survivors[1:]:
            total += by_sender[party].masked  # wraps modulo 2**bits, as intended
        current.codec = FixedPointCodec(
            first.bits, first.value_range, first.num_summands
        )
        current.survivors, current.total = survivors, total
        current.dropped = tuple(p for p in current.active if p not in survivors)
        for party in survivors:
            near = current.neighbours[party]
            current.alive[party] = tuple(p for p in near if p in survivors)
            current.gone[party] = tuple(p for p in near if p not in survivors)
        bitmap = self.directory.bitmap(survivors)
        return {
            party: UnmaskRequest(
                current.round_id, party, bitmap, route_shares(current, by_sender, party)
            )
            for party in survivors
        }

    def unmask(self, responses: Sequence[UnmaskResponse]) -> SecureSum:
        """Round 4: rebuild the seeds, remove every mask, decode the sum."""
        current = self._current_round()
        if current.total is None or current.codec is None:
            raise ProtocolError(
                f"round {current.round_id}: unmask before masked inputs"
            )
        self._open = None
        answers = check_responses(self.directory, current, responses)
        keys, signs = self._self_masks(current, answers)
        pair_keys, pair_signs = self._dropped_pair_masks(current, answers)
        total = current.total
        add_masks(total, keys + pair_keys, signs + pair_signs)
        logger.debug(
            "round %d unmasked: %d contributors, %d dropped",
            current.round_id,
            len(current.survivors),
            len(current.dropped),
        )
        return SecureSum(
            current.round_id,
            current.codec.decode(total),
            current.survivors,
            current.dropped,
        )

    # ------------------------------------------------------------------ helpers
    def _current_round(self) -> OpenRound:
        if self._open is None:
            raise ProtocolError("server: no open round; call open_round() first")
        return self._open

    def _self_masks(
        self, current: OpenRound, answers: dict[int, UnmaskResponse]
    ) -> tuple[list[bytes], list[int]]:
        """Each survivor's self-mask key, from its neighbours' revealed shares."""
        keys = []
        for owner in current.survivors:
            points = [
                (
                    self.directory.point(holder),
                    answers[holder].self_mask_shares[
                        current.alive[holder].index(owner)
                    ],
                )
                for holder in current.alive[owner]
                if holder in answers
            ]
            seed = shamir.reconstruct(
                points,
                self.directory.threshold,
                f"round {current.round_id}: self-mask seed of party {owner}",
            )
            keys.append(self_mask_key(seed, self.directory.run_id, current.round_id))
        return keys, [-1] * len(keys)

    def _dropped_pair_masks(
        self, current: OpenRound, answers: dict[int, UnmaskResponse]
    ) -> tuple[list[bytes], list[int]]:
        """Pair masks survivors hold with dropped neighbours, with removal signs."""
        keys, signs = [], []
        for survivor in current.survivors:
            gone = current.gone[survivor]
            if not gone:
                continue
            if survivor not in answers:
                raise RecoveryFailed(
                    f"round {current.round_id}: survivor {survivor} did not answer "
                    f"the unmask request, and only it can reveal its pair masks with "
                    f"dropped neighbours {list(gone)}; the round's sum is lost"
                )
            for dropped, key in zip(gone, answers[survivor].pair_keys, strict=True):
                keys.append(key)
                signs.append(-mask_sign(survivor, dropped))
        return keys, signs
