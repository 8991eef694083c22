"""A party's side of secure aggregation: setup once per run, then mask/unmask rounds.

State machine (Bonawitz et al. 2017, Fig. 4, with key agreement hoisted to
once per run and a fresh self-mask seed every round)::

    advertise() -> KeyAdvertisement
    receive_directory(KeyDirectory) -> SetupShares
    receive_setup_shares(SetupSharesDelivery)          # ready
    repeat: mask(MaskRequest, values, codec) -> MaskedInput
            unmask(UnmaskRequest) -> UnmaskResponse

Rules an honest party enforces, whatever the server asks:

* a round id is masked at most once and round ids strictly increase (fresh
  masks; no nonce or share reuse);
* in one round it reveals, for each party, either a share of its self-mask
  seed (listed as survivor) or a share of its mask key (listed as dropped),
  never both;
* a party whose mask-key share it revealed is excluded for the rest of the
  run: its pairwise masks are known to the server, so revealing its
  self-mask share later would expose its input. A request listing such a
  party as active or surviving is refused.

The whole state converts to flat arrays (:meth:`to_state`) so a Flower node
can keep it in its ``Context.state`` between messages; it holds private keys
and never leaves the node.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from fedmed.privacy import shamir
from fedmed.privacy.directory import Directory
from fedmed.privacy.errors import ProtocolError
from fedmed.privacy.fixed_point import FixedPointCodec
from fedmed.privacy.keys import (
    ShareContext,
    decrypt_share,
    encrypt_share,
    mask_key_from_seed,
    pair_seed,
    public_bytes,
    share_cipher,
)
from fedmed.privacy.masking import apply_masks, pairwise_round_key, self_mask_key
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

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartyState(WireMessage):
    """Everything a party must remember between messages (stays on the node)."""

    kinds: ClassVar = {
        "party": "id",
        "mask_seed": "shares",
        "share_private": "bytes",
        "run_id": "bytes",
        "threshold": "int",
        "parties": "ids",
        "mask_publics": "keys",
        "share_publics": "keys",
        "participants": "ids",
        "key_share_owners": "ids",
        "key_shares": "shares",
        "excluded": "ids",
        "last_round": "int",
        "pending_round": "int",
        "pending_active": "ids",
        "pending_own_share": "shares",
    }
    party: int
    mask_seed: tuple[int, ...]
    share_private: bytes
    run_id: bytes = b""
    threshold: int = 0
    parties: tuple[int, ...] = ()
    mask_publics: tuple[bytes, ...] = ()
    share_publics: tuple[bytes, ...] = ()
    participants: tuple[int, ...] = ()
    key_share_owners: tuple[int, ...] = ()
    key_shares: tuple[int, ...] = ()
    excluded: tuple[int, ...] = ()
    last_round: int = -1
    pending_round: int = -1
    pending_active: tuple[int, ...] = ()
    pending_own_share: tuple[int, ...] = field(default=())


class SecAggParty:
    """One party (e.g. an image provider) of a secure-aggregation run."""

    def __init__(self, party: int, state: PartyState | None = None):
        if not 0 <= party < 2**64:
            raise ValueError(f"party ids must be integers in [0, 2**64), found {party}")
        if state is None:
            share_key = X25519PrivateKey.generate()
            state = PartyState(
                party=party,
                mask_seed=(shamir.random_secret(),),
                share_private=share_key.private_bytes_raw(),
            )
        self._state = state
        self._mask_key = mask_key_from_seed(state.mask_seed[0])
        self._share_key = X25519PrivateKey.from_private_bytes(state.share_private)
        # Derived per peer from the state on first use; never part of the state.
        self._ciphers: dict[tuple[int, int], ChaCha20Poly1305] = {}
        self._pair_seeds: dict[int, bytes] = {}
        self._directory_view: Directory | None = None

    @property
    def party(self) -> int:
        return self._state.party

    @property
    def num_parties(self) -> int:
        """Parties in the run's key directory (size the codec's summands with it)."""
        return len(self._state.parties)

    @property
    def excluded(self) -> tuple[int, ...]:
        """Parties this party knows to be out of the run (mask key revealed)."""
        return self._state.excluded

    def to_state(self) -> dict[str, np.ndarray]:
        """Flat arrays of the party's secrets and progress (keep on the node)."""
        return self._state.to_arrays()

    @classmethod
    def from_state(cls, arrays: Mapping[str, np.ndarray]) -> SecAggParty:
        """Restore a party saved with :meth:`to_state`."""
        state = PartyState.from_arrays(arrays)
        return cls(state.party, state)

    # ------------------------------------------------------------------ setup
    def advertise(self) -> KeyAdvertisement:
        """Setup 1: the two public keys for the server's directory."""
        return KeyAdvertisement(
            self.party, public_bytes(self._mask_key), public_bytes(self._share_key)
        )

    def receive_directory(self, message: KeyDirectory) -> SetupShares:
        """Setup 2->3: check the directory, Shamir-share the mask-key seed to peers."""
        if self._state.parties:
            raise ProtocolError(
                f"party {self.party}: key directory received twice; setup runs once "
                "per run (start a new party for a new run)"
            )
        own = self.advertise()
        directory = Directory.from_message(message)
        directory.check_member(self.party, own.mask_public, own.share_public)
        self._state = replace(
            self._state,
            run_id=message.run_id,
            threshold=message.threshold,
            parties=message.parties,
            mask_publics=message.mask_publics,
            share_publics=message.share_publics,
        )
        own_share, recipients, blobs = self._share_secret(
            self._state.mask_seed[0], directory.parties, "mask-key", 0
        )
        self._state = replace(
            self._state, key_share_owners=(self.party,), key_shares=(own_share,)
        )
        return SetupShares(self.party, recipients, blobs)

    def receive_setup_shares(self, message: SetupSharesDelivery) -> None:
        """Setup 4: decrypt and keep every peer's mask-key share; the party is ready."""
        directory = self._directory()
        if message.recipient != self.party:
            raise ProtocolError(
                f"party {self.party}: received setup shares addressed to "
                f"party {message.recipient}"
            )
        participants = directory.check_subset(message.participants, "participants")
        if self.party not in participants:
            raise ProtocolError(f"party {self.party}: not among the run's participants")
        received = dict(zip(message.senders, message.ciphertexts, strict=True))
        owners, shares = (
            list(self._state.key_share_owners),
            list(self._state.key_shares),
        )
        for sender in participants:
            if sender == self.party:
                continue
            if sender not in received:
                raise ProtocolError(
                    f"party {self.party}: participant {sender} has no setup share "
                    "for this party; the server must deliver one per participant"
                )
            context = self._context("mask-key", 0, sender, self.party, sender)
            cipher = self._cipher(sender, self.party)
            shares.append(decrypt_share(cipher, received[sender], context))
            owners.append(sender)
        self._state = replace(
            self._state,
            participants=participants,
            key_share_owners=tuple(owners),
            key_shares=tuple(shares),
        )
        logger.debug("party %s ready with %d peers", self.party, len(owners) - 1)

    # ------------------------------------------------------------------ rounds
    def mask(
        self, request: MaskRequest, values: np.ndarray, codec: FixedPointCodec
    ) -> MaskedInput:
        """Round 1->2: encode, add self and pairwise masks, share the self-mask seed."""
        active = self._check_mask_request(request, codec)
        encoded = codec.encode(values, party=self.party)
        self_seed = shamir.random_secret()
        own_share, recipients, blobs = self._share_secret(
            self_seed, active, "self-mask", request.round_id
        )
        run_id = self._state.run_id
        pair_keys = {
            peer: pairwise_round_key(self._pair_seed(peer), run_id, request.round_id)
            for peer in active
            if peer != self.party
        }
        self_key = self_mask_key(self_seed, run_id, request.round_id)
        masked = apply_masks(encoded, self_key, pair_keys, self.party, codec.bits)
        self._state = replace(
            self._state,
            last_round=request.round_id,
            pending_round=request.round_id,
            pending_active=active,
            pending_own_share=(own_share,),
        )
        return MaskedInput(
            sender=self.party,
            round_id=request.round_id,
            bits=codec.bits,
            value_range=codec.value_range,
            num_summands=codec.num_summands,
            masked=masked,
            recipients=recipients,
            ciphertexts=blobs,
        )

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Round 3->4: reveal self-mask shares of survivors, key shares of dropped."""
        survivors, dropped = self._check_unmask_request(request)
        received = dict(zip(request.senders, request.ciphertexts, strict=True))
        owners, shares = [self.party], [self._state.pending_own_share[0]]
        for sender, blob in received.items():
            if sender not in survivors or sender == self.party:
                raise ProtocolError(
                    f"party {self.party}: round {request.round_id} carries a self-mask "
                    f"share from {sender}, which is not another survivor"
                )
            context = self._context(
                "self-mask", request.round_id, sender, self.party, sender
            )
            shares.append(
                decrypt_share(self._cipher(sender, self.party), blob, context)
            )
            owners.append(sender)
        held = dict(
            zip(self._state.key_share_owners, self._state.key_shares, strict=True)
        )
        self._state = replace(
            self._state,
            excluded=tuple(sorted(set(self._state.excluded) | set(dropped))),
            pending_round=-1,
            pending_active=(),
            pending_own_share=(),
        )
        return UnmaskResponse(
            sender=self.party,
            round_id=request.round_id,
            self_mask_owners=tuple(owners),
            self_mask_shares=tuple(shares),
            mask_key_owners=dropped,
            mask_key_shares=tuple(held[d] for d in dropped),
        )

    def _share_secret(
        self, secret: int, holders: tuple[int, ...], purpose: str, round_id: int
    ) -> tuple[int, tuple[int, ...], tuple[bytes, ...]]:
        """Shamir-share ``secret`` over ``holders``: own share, peers, ciphertexts."""
        shares = shamir.split(
            secret, self._state.threshold, self._directory().points(holders)
        )
        own_share, recipients, blobs = 0, [], []
        for peer, share in zip(holders, shares, strict=True):
            if peer == self.party:
                own_share = share
                continue
            context = self._context(purpose, round_id, self.party, peer, self.party)
            blobs.append(encrypt_share(self._cipher(self.party, peer), share, context))
            recipients.append(peer)
        return own_share, tuple(recipients), tuple(blobs)

    # ------------------------------------------------------------------ checks
    def _check_mask_request(
        self, request: MaskRequest, codec: FixedPointCodec
    ) -> tuple[int, ...]:
        if not self._state.participants:
            raise ProtocolError(f"party {self.party}: mask() before setup finished")
        if request.round_id <= self._state.last_round:
            raise ProtocolError(
                f"party {self.party}: round {request.round_id} is not after the last "
                f"masked round {self._state.last_round}; round ids must increase"
            )
        active = self._directory().check_subset(request.active, "active parties")
        if self.party not in active:
            raise ProtocolError(
                f"party {self.party}: excluded from round {request.round_id} (its mask "
                "key was revealed after a dropout); a new key setup is needed to rejoin"
            )
        stale = sorted(set(active) & set(self._state.excluded))
        if stale:
            raise ProtocolError(
                f"party {self.party}: round {request.round_id} lists excluded "
                f"parties {stale} as active; they cannot rejoin this run"
            )
        if len(active) < self._state.threshold:
            raise ProtocolError(
                f"round {request.round_id}: {len(active)} active parties, "
                f"fewer than the threshold {self._state.threshold}"
            )
        if codec.num_summands < len(active):
            raise ProtocolError(
                f"codec sized for {codec.num_summands} summands but "
                f"{len(active)} parties are active; the sum could overflow"
            )
        return active

    def _check_unmask_request(
        self, request: UnmaskRequest
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if request.round_id != self._state.pending_round:
            raise ProtocolError(
                f"party {self.party}: unmask for round {request.round_id} but the "
                f"pending masked round is {self._state.pending_round} (each round "
                "is unmasked once, after it was masked)"
            )
        survivors = tuple(sorted(request.survivors))
        dropped = tuple(sorted(request.dropped))
        active = set(self._state.pending_active)
        if set(survivors) & set(dropped) or set(survivors) | set(dropped) != active:
            raise ProtocolError(
                f"party {self.party}: round {request.round_id} survivors {survivors} "
                f"and "
                f"dropped {dropped} must split the round's active parties "
                f"{sorted(active)} exactly"
            )
        if self.party not in survivors:
            raise ProtocolError(
                f"party {self.party}: asked to unmask but listed dropped"
            )
        if len(survivors) < self._state.threshold:
            raise ProtocolError(
                f"round {request.round_id}: {len(survivors)} survivors, fewer than "
                f"the threshold {self._state.threshold}; refusing to reveal shares"
            )
        return survivors, dropped

    # ------------------------------------------------------------------ keys
    def _directory(self) -> Directory:
        if not self._state.parties:
            raise ProtocolError(f"party {self.party}: no key directory received yet")
        if self._directory_view is None:
            self._directory_view = Directory(
                self._state.run_id,
                self._state.threshold,
                self._state.parties,
                self._state.mask_publics,
                self._state.share_publics,
            )
        return self._directory_view

    def _context(
        self, purpose: str, round_id: int, sender: int, recipient: int, owner: int
    ) -> ShareContext:
        return ShareContext(
            self._state.run_id, purpose, round_id, sender, recipient, owner
        )

    def _cipher(self, sender: int, recipient: int) -> ChaCha20Poly1305:
        if (sender, recipient) not in self._ciphers:
            peer = recipient if sender == self.party else sender
            peer_public = self._directory().share_public(peer)
            self._ciphers[sender, recipient] = share_cipher(
                self._share_key, peer_public, self._state.run_id, sender, recipient
            )
        return self._ciphers[sender, recipient]

    def _pair_seed(self, peer: int) -> bytes:
        if peer not in self._pair_seeds:
            peer_public = self._directory().mask_public(peer)
            self._pair_seeds[peer] = pair_seed(
                self._mask_key, peer_public, self._state.run_id, self.party, peer
            )
        return self._pair_seeds[peer]
