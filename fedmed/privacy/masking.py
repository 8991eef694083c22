"""Pseudo-random masks in the ring Z_(2**bits), expanded with AES-256-CTR.

Bonawitz et al. 2017, Sec. 3-4: party ``u`` sends
``y_u = x_u + PRG(b_u) + sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv)``
(mod ``2**bits``). The pairwise terms cancel in the sum over all parties, the
self mask ``PRG(b_u)`` is removed by the server once ``t`` parties reveal
shares of ``b_u``.

Per-round freshness: the AES key of a mask is HKDF-SHA256 of the run-level
pair seed (or the round's self-mask seed) with the round id in the label, so
every round uses independent masks from one key agreement per run. The PRG is
the AES-256-CTR keystream from ``cryptography`` (AES-NI, several GB/s), read as
little-endian ring elements; this expansion is the protocol's main cost
(``n - 1`` pairwise masks per party per round).
"""

from __future__ import annotations

import struct

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedmed.privacy import shamir
from fedmed.privacy.fixed_point import RING_DTYPES
from fedmed.privacy.keys import hkdf

_ZERO_IV = bytes(16)


def expand(key: bytes, size: int, bits: int) -> np.ndarray:
    """``size`` ring elements of AES-256-CTR keystream under a one-use ``key``."""
    dtype = np.dtype(RING_DTYPES[bits]).newbyteorder("<")
    encryptor = Cipher(algorithms.AES(key), modes.CTR(_ZERO_IV)).encryptor()
    stream = encryptor.update(bytes(size * dtype.itemsize)) + encryptor.finalize()
    return np.frombuffer(stream, dtype=dtype).astype(RING_DTYPES[bits], copy=False)


def pairwise_round_key(pair_seed: bytes, run_id: bytes, round_id: int) -> bytes:
    """AES key of one pair's mask in one round (fresh every round)."""
    label = b"fedmed/secagg/pair-mask" + struct.pack(">q", round_id)
    return hkdf(pair_seed, run_id, label)


def self_mask_key(seed: int, run_id: bytes, round_id: int) -> bytes:
    """AES key of a party's self mask from its per-round shared seed."""
    label = b"fedmed/secagg/self-mask" + struct.pack(">q", round_id)
    return hkdf(shamir.to_bytes(seed), run_id, label)


def mask_sign(owner: int, peer: int) -> int:
    """+1 if ``owner`` adds the pair mask with ``peer``, -1 if it subtracts it."""
    return 1 if owner < peer else -1


def apply_masks(
    encoded: np.ndarray,
    self_key: bytes,
    pair_keys: dict[int, bytes],
    owner: int,
    bits: int,
) -> np.ndarray:
    """Masked vector ``y = x + PRG(b) + sum_v sign(u, v) PRG(s_uv)`` (mod 2**bits)."""
    masked = encoded.astype(RING_DTYPES[bits], copy=True)
    masked += expand(self_key, masked.size, bits)
    for peer, key in pair_keys.items():
        if mask_sign(owner, peer) > 0:
            masked += expand(key, masked.size, bits)
        else:
            masked -= expand(key, masked.size, bits)
    return masked
