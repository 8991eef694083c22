"""Key agreement and authenticated share encryption from ``cryptography`` primitives.

Each party holds two X25519 key pairs per run (Bonawitz et al. 2017, Sec. 4):

* the *mask key* ``c``: Diffie-Hellman with a peer's mask key gives the pair
  seed of their pairwise mask. Its private key is derived from a 127-bit seed
  (HKDF-SHA256 -> X25519 private bytes) so that the seed, a field element, can
  be Shamir-shared; when a party drops out the server rebuilds its key from
  ``t`` shares and checks it against the public key in the directory.
* the *share key* ``s``: Diffie-Hellman with a peer's share key gives the
  ChaCha20-Poly1305 key that encrypts the Shamir shares sent to that peer
  through the server, so the server can neither read nor alter them.

All derivations use HKDF-SHA256 with the run id as salt and a label naming
the purpose and the ordered party ids, so keys of different pairs, directions,
purposes and runs are independent.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedmed.privacy import shamir
from fedmed.privacy.errors import ShareTampered

PUBLIC_KEY_BYTES = 32
NONCE_BYTES = 12
CIPHERTEXT_BYTES = NONCE_BYTES + shamir.SHARE_BYTES + 16  # nonce | share | tag
_RAW = serialization.Encoding.Raw
_RAW_PUBLIC = serialization.PublicFormat.Raw


def hkdf(material: bytes, salt: bytes, label: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) of ``material``; ``label`` is the context info."""
    return HKDF(hashes.SHA256(), length=length, salt=salt, info=label).derive(material)


def mask_key_from_seed(seed: int) -> X25519PrivateKey:
    """The X25519 mask key a party derives from its shareable 127-bit seed.

    The seed is fresh per party and run; it is derived before the run id is
    known (the public key is advertised first), hence no salt.
    """
    raw = hkdf(shamir.to_bytes(seed), b"", b"fedmed/secagg/mask-key")
    return X25519PrivateKey.from_private_bytes(raw)


def public_bytes(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    public = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return public.public_bytes(_RAW, _RAW_PUBLIC)


def _pair_label(purpose: bytes, first: int, second: int) -> bytes:
    return purpose + struct.pack(">QQ", first, second)


def pair_seed(
    own: X25519PrivateKey, peer_public: bytes, run_id: bytes, a: int, b: int
) -> bytes:
    """Seed of the pairwise mask between parties ``a`` and ``b`` (symmetric)."""
    shared = own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    low, high = min(a, b), max(a, b)
    return hkdf(shared, run_id, _pair_label(b"fedmed/secagg/pair-seed", low, high))


def share_cipher(
    own: X25519PrivateKey,
    peer_public: bytes,
    run_id: bytes,
    sender: int,
    recipient: int,
) -> ChaCha20Poly1305:
    """AEAD for shares travelling from ``sender`` to ``recipient`` (one direction)."""
    shared = own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    label = _pair_label(b"fedmed/secagg/share-key", sender, recipient)
    return ChaCha20Poly1305(hkdf(shared, run_id, label))


@dataclass(frozen=True)
class ShareContext:
    """What a share ciphertext is bound to (AEAD associated data)."""

    run_id: bytes
    purpose: str  # "mask-key" (setup) or "self-mask" (per round)
    round_id: int
    sender: int
    recipient: int
    owner: int

    def associated_data(self) -> bytes:
        head = struct.pack(
            ">qQQQ", self.round_id, self.sender, self.recipient, self.owner
        )
        return self.run_id + self.purpose.encode() + head


def encrypt_share(cipher: ChaCha20Poly1305, share: int, context: ShareContext) -> bytes:
    """Encrypt and authenticate one Shamir share (random 96-bit nonce)."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = cipher.encrypt(nonce, shamir.to_bytes(share), context.associated_data())
    return nonce + sealed


def decrypt_share(cipher: ChaCha20Poly1305, blob: bytes, context: ShareContext) -> int:
    """Decrypt one share; any modification or misrouting raises ShareTampered."""
    if len(blob) != CIPHERTEXT_BYTES:
        raise ShareTampered(
            context.sender, context.recipient, context.purpose, context.round_id
        )
    nonce, sealed = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
    try:
        plain = cipher.decrypt(nonce, sealed, context.associated_data())
        return shamir.from_bytes(plain)
    except (InvalidTag, ValueError):
        raise ShareTampered(
            context.sender, context.recipient, context.purpose, context.round_id
        ) from None
