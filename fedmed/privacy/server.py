"""The server's side of secure aggregation: it routes messages and learns only sums.

State machine (mirrors :mod:`fedmed.privacy.party`)::

    receive_advertisements([KeyAdvertisement]) -> KeyDirectory       # to all
    route_setup_shares([SetupShares]) -> {party: SetupSharesDelivery}
    repeat: mask_request(round_id) -> MaskRequest                       # to all
            route_masked_inputs([MaskedInput]) -> {party: UnmaskRequest}
            unmask([UnmaskResponse]) -> SecureSum

Dropout recovery (Bonawitz et al. 2017): parties whose masked input did not
arrive are *dropped*; the survivors reveal shares of the dropped parties'
mask-key seeds, from which the server rebuilds those keys (checked against
the directory), recomputes their pairwise masks with every survivor and
removes them. Survivors' self masks are removed from revealed self-mask
shares. Both need ``threshold`` responders; with fewer the round fails with
:class:`RecoveryFailed`. A dropped party is excluded for the rest of the run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedmed.privacy import shamir
from fedmed.privacy.directory import Directory, default_threshold
from fedmed.privacy.errors import ProtocolError, RecoveryFailed
from fedmed.privacy.fixed_point import FixedPointCodec
from fedmed.privacy.keys import mask_key_from_seed, pair_seed, public_bytes
from fedmed.privacy.masking import (
    add_masks,
    mask_sign,
    pairwise_round_key,
    self_mask_key,
)
from fedmed.privacy.messages import (
    KeyAdvertisement,
    KeyDirectory,
    MaskedInput,
    MaskRequest,
    SetupShares,
    SetupSharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class SecureSum:
    """The unmasked sum of one round and who contributed to it."""

    round_id: int
    values: np.ndarray  # float64, the decoded sum
    contributors: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass
class _OpenRound:
    round_id: int
    active: tuple[int, ...]
    survivors: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()
    codec: FixedPointCodec | None = None
    total: np.ndarray | None = None


class SecAggServer:
    """The aggregator: routes setup/round messages and unmasks sums."""

    def __init__(self, threshold: int | None = None, run_id: bytes | None = None):
        self._requested_threshold = threshold
        self._run_id = run_id if run_id is not None else os.urandom(16)
        self._directory: Directory | None = None
        self._participants: tuple[int, ...] = ()
        self._excluded: set[int] = set()
        self._last_round = -1
        self._open: _OpenRound | None = None

    @property
    def directory(self) -> Directory:
        if self._directory is None:
            raise ProtocolError("server: no key directory yet; run the setup first")
        return self._directory

    @property
    def active(self) -> tuple[int, ...]:
        """Participants not excluded by an earlier dropout."""
        return tuple(p for p in self._participants if p not in self._excluded)

    # ------------------------------------------------------------------ setup
    def receive_advertisements(self, ads: Sequence[KeyAdvertisement]) -> KeyDirectory:
        """Setup 1->2: build the key directory broadcast to every party."""
        ordered = sorted(ads, key=lambda ad: ad.party)
        n = len(ordered)
        threshold = self._requested_threshold or default_threshold(n)
        self._directory = Directory(
            self._run_id,
            threshold,
            tuple(ad.party for ad in ordered),
            tuple(ad.mask_public for ad in ordered),
            tuple(ad.share_public for ad in ordered),
        )
        logger.info("secure aggregation: %d parties, threshold %d", n, threshold)
        return self._directory.to_message()

    def route_setup_shares(
        self, bundles: Sequence[SetupShares]
    ) -> dict[int, SetupSharesDelivery]:
        """Setup 3->4: forward each encrypted mask-key share to its recipient."""
        directory = self.directory
        participants = directory.check_subset([b.sender for b in bundles], "senders")
        if len(participants) < directory.threshold:
            raise RecoveryFailed(
                f"setup: {len(participants)} parties sent their shares, fewer than the "
                f"threshold {directory.threshold}; restart the setup"
            )
        inbox: dict[int, list[tuple[int, bytes]]] = {p: [] for p in participants}
        for bundle in bundles:
            expected = set(directory.parties) - {bundle.sender}
            if set(bundle.recipients) != expected or len(bundle.recipients) != len(
                expected
            ):
                raise ProtocolError(
                    f"setup: party {bundle.sender} sent shares for "
                    f"{sorted(bundle.recipients)}, expected one for each of "
                    f"{sorted(expected)}"
                )
            for recipient, blob in zip(
                bundle.recipients, bundle.ciphertexts, strict=True
            ):
                if recipient in inbox:
                    inbox[recipient].append((bundle.sender, blob))
        self._participants = participants
        return {
            party: SetupSharesDelivery(
                party,
                participants,
                tuple(s for s, _ in items),
                tuple(b for _, b in items),
            )
            for party, items in inbox.items()
        }

    # ------------------------------------------------------------------ rounds
    def mask_request(self, round_id: int) -> MaskRequest:
        """Round 1: open round ``round_id`` (strictly increasing) for the active set."""
        if not self._participants:
            raise ProtocolError("server: mask_request() before setup finished")
        if round_id <= self._last_round:
            raise ProtocolError(
                f"server: round {round_id} is not after round {self._last_round}; "
                "secure-aggregation round ids must strictly increase"
            )
        active = self.active
        if len(active) < self.directory.threshold:
            raise RecoveryFailed(
                f"round {round_id}: only {len(active)} parties remain in the run, "
                f"fewer than the threshold {self.directory.threshold}; start a new "
                "key setup"
            )
        self._last_round = round_id
        self._open = _OpenRound(round_id, active)
        return MaskRequest(round_id, active)

    def route_masked_inputs(
        self, inputs: Sequence[MaskedInput]
    ) -> dict[int, UnmaskRequest]:
        """Round 2->3: add the masked vectors, ask survivors for their shares."""
        current = self._current_round()
        survivors = self._check_inputs(current, inputs)
        dropped = tuple(p for p in current.active if p not in survivors)
        total = inputs[0].masked.copy()
        for message in inputs[1:]:
            total += message.masked  # wraps modulo 2**bits, as intended
        first = inputs[0]
        current.codec = FixedPointCodec(
            first.bits, first.value_range, first.num_summands
        )
        current.survivors, current.dropped, current.total = survivors, dropped, total
        inbox: dict[int, list[tuple[int, bytes]]] = {p: [] for p in survivors}
        for message in inputs:
            for peer, blob in zip(message.recipients, message.ciphertexts, strict=True):
                if peer in inbox:
                    inbox[peer].append((message.sender, blob))
        return {
            party: UnmaskRequest(
                current.round_id,
                survivors,
                dropped,
                tuple(s for s, _ in items),
                tuple(b for _, b in items),
            )
            for party, items in inbox.items()
        }

    def unmask(self, responses: Sequence[UnmaskResponse]) -> SecureSum:
        """Round 4: rebuild the secrets, remove every mask, decode the sum."""
        current = self._current_round()
        if current.total is None or current.codec is None:
            raise ProtocolError(
                f"round {current.round_id}: unmask before masked inputs"
            )
        self._open = None
        self._excluded |= set(current.dropped)
        responders = self._check_responses(current, responses)
        total = current.total
        seeds = self._recover(current, responses, responders, "self").values()
        keys = [self_mask_key(s, self._run_id, current.round_id) for s in seeds]
        signs = [-1] * len(keys)
        key_seeds = self._recover(current, responses, responders, "key")
        for dropped, seed in key_seeds.items():
            dropped_keys, dropped_signs = self._dropped_pair_masks(
                current, dropped, seed
            )
            keys += dropped_keys
            signs += dropped_signs
        add_masks(total, keys, signs)
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
    def _current_round(self) -> _OpenRound:
        if self._open is None:
            raise ProtocolError("server: no open round; call mask_request() first")
        return self._open

    def _check_inputs(
        self, current: _OpenRound, inputs: Sequence[MaskedInput]
    ) -> tuple[int, ...]:
        senders = self.directory.check_subset([m.sender for m in inputs], "senders")
        strangers = sorted(set(senders) - set(current.active))
        if strangers:
            raise ProtocolError(
                f"round {current.round_id}: masked input from parties {strangers} "
                "that are not active in this round"
            )
        if len(senders) < self.directory.threshold:
            self._open = None
            self._excluded |= set(current.active) - set(senders)
            raise RecoveryFailed(
                f"round {current.round_id}: {len(senders)} masked inputs arrived, at "
                f"least {self.directory.threshold} needed; "
                f"{len(current.active) - len(senders)} of {len(current.active)} "
                "parties dropped, more than the protocol tolerates"
            )
        first = inputs[0]
        for message in inputs:
            same_codec = (message.bits, message.value_range, message.num_summands) == (
                first.bits,
                first.value_range,
                first.num_summands,
            )
            if message.round_id != current.round_id or not same_codec:
                raise ProtocolError(
                    f"round {current.round_id}: party {message.sender} sent round "
                    f"{message.round_id} with codec ({message.bits} bits, range "
                    f"{message.value_range}, {message.num_summands} summands); all "
                    "parties must use this round's id and one codec"
                )
            if message.masked.shape != first.masked.shape or message.masked.dtype != (
                np.dtype(f"uint{first.bits}")
            ):
                raise ProtocolError(
                    f"round {current.round_id}: party {message.sender} sent a masked "
                    f"vector of shape {message.masked.shape} and dtype "
                    f"{message.masked.dtype}, expected {first.masked.shape} "
                    f"uint{first.bits}"
                )
        if len(senders) > first.num_summands:
            raise ProtocolError(
                f"round {current.round_id}: {len(senders)} inputs exceed the codec's "
                f"{first.num_summands} summands; the sum could overflow"
            )
        return senders

    def _check_responses(
        self, current: _OpenRound, responses: Sequence[UnmaskResponse]
    ) -> tuple[int, ...]:
        responders = self.directory.check_subset(
            [r.sender for r in responses], "responders"
        )
        for response in responses:
            if response.round_id != current.round_id or response.sender not in (
                current.survivors
            ):
                raise ProtocolError(
                    f"round {current.round_id}: unmask response from party "
                    f"{response.sender} for round {response.round_id} is not expected"
                )
            if set(response.mask_key_owners) & set(current.survivors):
                raise ProtocolError(
                    f"round {current.round_id}: party {response.sender} revealed "
                    "mask-key shares of surviving parties"
                )
        if len(responders) < self.directory.threshold:
            raise RecoveryFailed(
                f"round {current.round_id}: {len(responders)} parties answered the "
                f"unmask request, at least {self.directory.threshold} needed; the "
                "round's sum cannot be recovered"
            )
        return responders

    def _recover(
        self,
        current: _OpenRound,
        responses: Sequence[UnmaskResponse],
        responders: tuple[int, ...],
        kind: str,
    ) -> dict[int, int]:
        """Reconstruct self-mask seeds of survivors or mask-key seeds of the dropped."""
        owners = current.survivors if kind == "self" else current.dropped
        points: dict[int, list[tuple[int, int]]] = {o: [] for o in owners}
        for response in responses:
            x = self.directory.points([response.sender])[0]
            pairs = (
                zip(response.self_mask_owners, response.self_mask_shares, strict=True)
                if kind == "self"
                else zip(
                    response.mask_key_owners, response.mask_key_shares, strict=True
                )
            )
            for owner, share in pairs:
                if owner in points:
                    points[owner].append((x, share))
        what = "self-mask seed" if kind == "self" else "mask key"
        return {
            owner: shamir.reconstruct(
                pts,
                self.directory.threshold,
                f"round {current.round_id}: {what} of party {owner}",
            )
            for owner, pts in points.items()
        }

    def _dropped_pair_masks(
        self, current: _OpenRound, dropped: int, seed: int
    ) -> tuple[list[bytes], list[int]]:
        """Round keys and removal signs of a dropped party's masks with survivors."""
        key = mask_key_from_seed(seed)
        if public_bytes(key) != self.directory.mask_public(dropped):
            raise RecoveryFailed(
                f"round {current.round_id}: the mask key rebuilt for dropped party "
                f"{dropped} does not match its public key (altered shares)"
            )
        keys, signs = [], []
        for survivor in current.survivors:
            peer_public = self.directory.mask_public(survivor)
            seed_bytes = pair_seed(key, peer_public, self._run_id, dropped, survivor)
            keys.append(pairwise_round_key(seed_bytes, self._run_id, current.round_id))
            signs.append(-mask_sign(survivor, dropped))  # undo what the survivor added
        return keys, signs
