"""Key agreement, the per-round key schedule and share encryption (``cryptography``).

Each party holds one X25519 key pair per run. With a peer's public key it
derives a 32-byte *pair secret* (HKDF-SHA256 of the Diffie-Hellman output,
salted with the run id, labelled with the ordered pair). Everything else is
derived from the pair secret with its own HKDF label:

* the pair's *round mask key* for round ``r`` (:func:`round_pair_key`), the
  AES key of their pairwise mask in that round. It is the only value derived
  from a private key that ever leaves a party: a survivor reveals it when the
  neighbour it shares it with dropped out of round ``r``. HKDF is a PRF, so
  the key of round ``r`` says nothing about other rounds' keys, the pair
  secret or the private key. This per-round key schedule is what keeps a
  dropout claimed in round ``r + 1`` from exposing round ``r`` (the private
  key itself is never revealed, not even as Shamir shares).
* the *share key* of one direction (``sender -> recipient``), a
  ChaCha20-Poly1305 key that encrypts the Shamir shares routed through the
  server, so it can neither read nor alter them.

Nonces are not random: a share ciphertext travels once per direction and
round, and a party masks each round id at most once with strictly increasing
ids (its state enforces it), so ``(share key, round id)`` never repeats. The
associated data binds the run id, the directory digest, the round, the
sender and the recipient, so a replayed, misrouted or cross-run ciphertext
fails authentication, and two parties holding different key directories
cannot read each other's shares.
"""

from __future__ import annotations

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
ROUND_KEY_BYTES = 32
TAG_BYTES = 16
SEALED_SHARE_BYTES = shamir.SHARE_BYTES + TAG_BYTES  # share | Poly1305 tag
_RAW = serialization.Encoding.Raw
_RAW_PUBLIC = serialization.PublicFormat.Raw


def hkdf(material: bytes, salt: bytes, label: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) of ``material``; ``label`` is the context info."""
    return HKDF(hashes.SHA256(), length=length, salt=salt, info=label).derive(material)


def public_bytes(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    public = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return public.public_bytes(_RAW, _RAW_PUBLIC)


def pair_secret(
    own: X25519PrivateKey, peer_public: bytes, run_id: bytes, a: int, b: int
) -> bytes:
    """The run-long secret of parties ``a`` and ``b`` (symmetric; never revealed)."""
    shared = own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    low, high = min(a, b), max(a, b)
    return hkdf(
        shared, run_id, b"fedmed/secagg/v2/pair" + struct.pack(">QQ", low, high)
    )


def round_pair_key(secret: bytes, run_id: bytes, round_id: int) -> bytes:
    """AES key of a pair's mask in round ``round_id`` (revealed if a party drops)."""
    return hkdf(
        secret, run_id, b"fedmed/secagg/v2/pair-mask" + struct.pack(">q", round_id)
    )


def share_cipher(
    secret: bytes, run_id: bytes, sender: int, recipient: int
) -> ChaCha20Poly1305:
    """AEAD for shares travelling from ``sender`` to ``recipient`` (one direction)."""
    label = b"fedmed/secagg/v2/share-key" + struct.pack(">QQ", sender, recipient)
    return ChaCha20Poly1305(hkdf(secret, run_id, label))


@dataclass(frozen=True)
class ShareContext:
    """What a share ciphertext is bound to (nonce and associated data)."""

    run_id: bytes
    directory_digest: bytes
    round_id: int
    sender: int
    recipient: int

    def nonce(self) -> bytes:
        """96-bit nonce: the round id; unique per direction key (see module doc)."""
        return struct.pack(">qI", self.round_id, 0)

    def associated_data(self) -> bytes:
        head = struct.pack(">qQQ", self.round_id, self.sender, self.recipient)
        return b"fedmed/secagg/v2/share" + self.run_id + self.directory_digest + head


def seal_share(cipher: ChaCha20Poly1305, share: int, context: ShareContext) -> bytes:
    """Encrypt and authenticate one Shamir share (32 bytes: share, tag)."""
    return cipher.encrypt(
        context.nonce(), shamir.to_bytes(share), context.associated_data()
    )


def open_share(cipher: ChaCha20Poly1305, blob: bytes, context: ShareContext) -> int:
    """Decrypt one share; any modification or misrouting raises ShareTampered."""
    if len(blob) != SEALED_SHARE_BYTES:
        raise ShareTampered(context.sender, context.recipient, context.round_id)
    try:
        plain = cipher.decrypt(context.nonce(), blob, context.associated_data())
        return shamir.from_bytes(plain)
    except (InvalidTag, ValueError):
        raise ShareTampered(
            context.sender, context.recipient, context.round_id
        ) from None
