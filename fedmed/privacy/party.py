"""A party's side of secure aggregation v2: keys once per run, then masked rounds.

State machine (message flow in :mod:`fedmed.privacy.protocol`)::

    advertise(KeyRequest) -> KeyAdvertisement           # setup, one round trip
    repeat: mask(MaskRequest, values, codec[, KeyDirectory]) -> MaskedInput
            unmask(UnmaskRequest) -> UnmaskResponse

The key directory travels with the party's first mask request; the party
checks it against its own :class:`~fedmed.privacy.directory.Floor` and
derives the neighbour graph from it (:mod:`fedmed.privacy.graph`). In
round ``r`` it masks with its neighbours that the request lists as active,
and Shamir-shares a fresh self-mask seed to them (sealed per neighbour).

Rules an honest party enforces, whatever the server asks:

* the directory carries the run id the party advertised for, lists the
  party with its own key, and meets its floor (threshold, party count);
  a second directory must be the same one;
* a round id is masked at most once and round ids strictly increase (fresh
  masks; no nonce reuse);
* a round is unmasked at most once, only after it was masked, only if the
  party itself and at least ``t`` of its round neighbours are listed as
  survivors and at least ``min_parties`` survive in all;
* in that one answer it reveals, per round neighbour, either its share of
  the neighbour's self-mask seed (survivor) or their round mask key
  (dropped), never both. Nothing it reveals is derived from another round
  or from its private key directly, so rounds never combine.

A party that dropped out of a round takes part in the next one as before:
what its neighbours revealed about it is bound to the round it dropped.

The whole state converts to flat arrays (:meth:`to_state`) so a Flower node
can keep it in its ``Context.state`` between messages; it holds the private
key and never leaves the node. Nothing secret outlives a round: the
self-mask seed is forgotten once shared.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from fedmed.privacy import shamir
from fedmed.privacy.directory import (
    DEFAULT_THRESHOLD_FRACTION,
    MIN_RUN_ID_BYTES,
    Directory,
    Floor,
)
from fedmed.privacy.errors import ProtocolError
from fedmed.privacy.fixed_point import FixedPointCodec
from fedmed.privacy.keys import (
    ShareContext,
    open_share,
    pair_secret,
    public_bytes,
    round_pair_key,
    seal_share,
    share_cipher,
)
from fedmed.privacy.masking import apply_masks, self_mask_key
from fedmed.privacy.messages import (
    KeyAdvertisement,
    KeyDirectory,
    KeyRequest,
    MaskedInput,
    MaskRequest,
    UnmaskRequest,
    UnmaskResponse,
)
from fedmed.privacy.party_state import PartyState

logger = logging.getLogger(__name__)


class SecAggParty:
    """One party (a site, an image provider) of a secure-aggregation run.

    Args:
        party: Its id (a site id or node id, unsigned 64-bit).
        min_threshold_fraction: Threshold floor ``t >= ceil(f k)`` among its
            ``k`` neighbours; above one half (see :mod:`fedmed.privacy.directory`).
        min_parties: Fewest parties it accepts in the directory, a round and
            among a round's survivors.
        state: A state saved with :meth:`to_state` (use :meth:`from_state`).
    """

    def __init__(
        self,
        party: int,
        *,
        min_threshold_fraction: float = DEFAULT_THRESHOLD_FRACTION,
        min_parties: int = 2,
        state: PartyState | None = None,
    ):
        if not 0 <= party < 2**64:
            raise ValueError(f"party ids must be integers in [0, 2**64), found {party}")
        if state is None:
            state = PartyState(
                party=party,
                private_key=X25519PrivateKey.generate().private_bytes_raw(),
                min_threshold_fraction=min_threshold_fraction,
                min_parties=min_parties,
            )
        self._state = state
        self._floor = Floor(state.min_threshold_fraction, state.min_parties)
        self._key = X25519PrivateKey.from_private_bytes(state.private_key)
        # Derived from the state on first use; never part of it.
        self._view: Directory | None = None
        self._secrets: dict[int, bytes] = {}
        self._ciphers: dict[tuple[int, int], ChaCha20Poly1305] = {}

    @property
    def party(self) -> int:
        return self._state.party

    @property
    def num_parties(self) -> int:
        """Parties in the run's key directory (size the codec's summands with it)."""
        return len(self._state.parties)

    @property
    def neighbours(self) -> tuple[int, ...]:
        """Whom it masks with and shares its seed to (derived from the directory)."""
        return self._directory().neighbours(self.party)

    def to_state(self) -> dict[str, np.ndarray]:
        """Flat arrays of the party's key, floor and progress (keep on the node)."""
        return self._state.to_arrays()

    @classmethod
    def from_state(cls, arrays: Mapping[str, np.ndarray]) -> SecAggParty:
        """Restore a party saved with :meth:`to_state`."""
        state = PartyState.from_arrays(arrays)
        return cls(state.party, state=state)

    # ------------------------------------------------------------------ setup
    def advertise(self, request: KeyRequest) -> KeyAdvertisement:
        """Setup: remember the run id, answer with the public key."""
        run_id = self._state.run_id
        if len(request.run_id) < MIN_RUN_ID_BYTES:
            raise ProtocolError(
                f"party {self.party}: run id of {len(request.run_id)} bytes, "
                f"expected >= {MIN_RUN_ID_BYTES} random bytes"
            )
        if run_id and run_id != request.run_id:
            raise ProtocolError(
                f"party {self.party}: keys were already advertised for another run; "
                "a new run needs a new party (fresh keys)"
            )
        self._state = replace(self._state, run_id=request.run_id)
        return KeyAdvertisement(self.party, public_bytes(self._key))

    def receive_directory(self, message: KeyDirectory) -> None:
        """Check the directory against this party's floor and keep it (once)."""
        directory = Directory.from_message(message)
        if self._state.parties:
            if directory.digest != self._directory().digest:
                raise ProtocolError(
                    f"party {self.party}: a second, different key directory for the "
                    "run; the directory is fixed once received (refusing)"
                )
            return
        if not self._state.run_id or directory.run_id != self._state.run_id:
            raise ProtocolError(
                f"party {self.party}: the key directory is for another run id than "
                "the one this party advertised its key for; refusing"
            )
        directory.check_member(self.party, public_bytes(self._key))
        self._floor.check(directory)
        self._state = replace(
            self._state,
            threshold=directory.threshold,
            degree=directory.degree,
            parties=directory.parties,
            public_keys=directory.public_keys,
        )
        self._view = directory
        logger.debug(
            "party %s: directory of %d parties, %d neighbours, threshold %d",
            self.party,
            len(directory.parties),
            directory.degree,
            directory.threshold,
        )

    # ------------------------------------------------------------------ rounds
    def mask(
        self,
        request: MaskRequest,
        values: np.ndarray,
        codec: FixedPointCodec,
        directory: KeyDirectory | None = None,
    ) -> MaskedInput:
        """Round 1->2: encode, add self and pair masks, seal seed shares."""
        if directory is not None:
            self.receive_directory(directory)
        neighbours = self._check_mask_request(request, codec)
        encoded = codec.encode(values, party=self.party)
        view, round_id = self._directory(), request.round_id
        seed = shamir.random_secret()
        shares = shamir.split(seed, view.threshold, [view.point(p) for p in neighbours])
        sealed = tuple(
            seal_share(
                self._cipher(self.party, peer),
                share,
                self._context(round_id, self.party, peer),
            )
            for peer, share in zip(neighbours, shares, strict=True)
        )
        run_id = self._state.run_id
        pair_keys = {
            peer: round_pair_key(self._secret(peer), run_id, round_id)
            for peer in neighbours
        }
        self_key = self_mask_key(seed, run_id, round_id)
        masked = apply_masks(encoded, self_key, pair_keys, self.party, codec.bits)
        self._state = replace(
            self._state,
            last_round=round_id,
            pending_round=round_id,
            pending_active=request.active,
        )
        return MaskedInput(
            sender=self.party,
            round_id=round_id,
            bits=codec.bits,
            value_range=codec.value_range,
            num_summands=codec.num_summands,
            masked=masked,
            shares=sealed,
        )

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Round 3->4: per round neighbour, a seed share (survivor) or pair key."""
        alive, dropped = self._check_unmask_request(request)
        if len(request.shares) != len(alive):
            raise ProtocolError(
                f"party {self.party}: round {request.round_id} delivers "
                f"{len(request.shares)} seed shares, but {len(alive)} of its "
                f"neighbours survived ({list(alive)}); refusing"
            )
        round_id = request.round_id
        shares = tuple(
            open_share(
                self._cipher(peer, self.party),
                blob,
                self._context(round_id, peer, self.party),
            )
            for peer, blob in zip(alive, request.shares, strict=True)
        )
        run_id = self._state.run_id
        keys = tuple(
            round_pair_key(self._secret(peer), run_id, round_id) for peer in dropped
        )
        self._state = replace(self._state, pending_round=-1, pending_active=b"")
        return UnmaskResponse(self.party, round_id, shares, keys)

    # ------------------------------------------------------------------ checks
    def _check_mask_request(
        self, request: MaskRequest, codec: FixedPointCodec
    ) -> tuple[int, ...]:
        """The party's neighbours in the round, after every rule holds."""
        view, round_id = self._directory(), request.round_id
        if request.run_id != view.run_id:
            raise ProtocolError(
                f"party {self.party}: round {round_id} belongs to another run than "
                "this party's key directory; a new run needs a new party"
            )
        if round_id <= self._state.last_round:
            raise ProtocolError(
                f"party {self.party}: round {round_id} is not after the last "
                f"masked round {self._state.last_round}; round ids must increase"
            )
        active = view.members(request.active, f"round {round_id} active parties")
        if self.party not in active:
            raise ProtocolError(
                f"party {self.party}: asked to mask round {round_id} but not listed "
                "among its active parties"
            )
        self._floor.check_count("active parties", len(active), round_id)
        neighbours = tuple(p for p in view.neighbours(self.party) if p in active)
        if len(neighbours) < view.threshold:
            raise ProtocolError(
                f"party {self.party}: round {round_id} lists {len(neighbours)} of "
                f"its neighbours as active, fewer than the threshold "
                f"{view.threshold}; its self-mask could never be removed"
            )
        if codec.num_summands < len(active):
            raise ProtocolError(
                f"codec sized for {codec.num_summands} summands but "
                f"{len(active)} parties are active; the sum could overflow"
            )
        return neighbours

    def _check_unmask_request(
        self, request: UnmaskRequest
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The round neighbours listed as survivors and as dropped."""
        view, round_id = self._directory(), request.round_id
        if request.recipient != self.party:
            raise ProtocolError(
                f"party {self.party}: received the unmask request addressed to "
                f"party {request.recipient}"
            )
        if round_id != self._state.pending_round:
            raise ProtocolError(
                f"party {self.party}: unmask for round {round_id} but the "
                f"pending masked round is {self._state.pending_round} (each round "
                "is unmasked once, after it was masked)"
            )
        active = view.members(self._state.pending_active, "active parties")
        survivors = view.members(request.survivors, f"round {round_id} survivors")
        strangers = sorted(set(survivors) - set(active))
        if strangers:
            raise ProtocolError(
                f"party {self.party}: round {round_id} lists {strangers} as "
                "survivors, but they were not active in the round"
            )
        if self.party not in survivors:
            raise ProtocolError(
                f"party {self.party}: asked to unmask round {round_id} but listed "
                "as dropped"
            )
        self._floor.check_count("survivors", len(survivors), round_id)
        neighbours = [p for p in view.neighbours(self.party) if p in active]
        alive = tuple(p for p in neighbours if p in survivors)
        dropped = tuple(p for p in neighbours if p not in survivors)
        if len(alive) < view.threshold:
            raise ProtocolError(
                f"party {self.party}: round {round_id} lists {len(dropped)} of its "
                f"{len(neighbours)} neighbours as dropped, leaving fewer than the "
                f"threshold {view.threshold}; refusing to reveal their pair keys "
                "(more than k - t of them could unmask this party's input)"
            )
        return alive, dropped

    # ------------------------------------------------------------------ keys
    def _directory(self) -> Directory:
        if not self._state.parties:
            raise ProtocolError(
                f"party {self.party}: no key directory received yet; it travels "
                "with the party's first mask request"
            )
        if self._view is None:
            self._view = Directory(
                self._state.run_id,
                self._state.threshold,
                self._state.degree,
                self._state.parties,
                self._state.public_keys,
            )
        return self._view

    def _context(self, round_id: int, sender: int, recipient: int) -> ShareContext:
        view = self._directory()
        return ShareContext(view.run_id, view.digest, round_id, sender, recipient)

    def _secret(self, peer: int) -> bytes:
        if peer not in self._secrets:
            self._secrets[peer] = pair_secret(
                self._key,
                self._directory().public_key(peer),
                self._state.run_id,
                self.party,
                peer,
            )
        return self._secrets[peer]

    def _cipher(self, sender: int, recipient: int) -> ChaCha20Poly1305:
        if (sender, recipient) not in self._ciphers:
            peer = recipient if sender == self.party else sender
            self._ciphers[sender, recipient] = share_cipher(
                self._secret(peer), self._state.run_id, sender, recipient
            )
        return self._ciphers[sender, recipient]
