"""Pseudo-random masks in the ring Z_(2**bits), expanded with AES-256-CTR.

Double masking (Bonawitz et al. 2017, Sec. 4) over a neighbour graph (Bell
et al. 2020): in round ``r`` party ``u`` sends
``y_u = x_u + PRG(b_u) + sum_{v in N(u), v > u} PRG(s_uv) - sum_{v in N(u), v < u}
PRG(s_uv)`` (mod ``2**bits``), where ``N(u)`` are its neighbours in the round,
``s_uv`` their round mask key (:func:`fedmed.privacy.keys.round_pair_key`)
and ``b_u`` a fresh self-mask seed. The pairwise terms cancel in the sum over
all parties; the server removes ``PRG(b_u)`` once ``t`` neighbours reveal
shares of ``b_u``, and the uncancelled pair masks of a dropped ``v`` with the
pair keys its surviving neighbours reveal.

The AES key of a self mask is HKDF-SHA256 of the round's seed with the round
id in the label. The PRG is the AES-256-CTR keystream from ``cryptography``
(AES-NI, several GB/s), read as little-endian ring elements; this expansion
is the protocol's main cost (``k + 1`` masks per party and round).
"""

from __future__ import annotations

import struct

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedmed.privacy import shamir
from fedmed.privacy.fixed_point import RING_DTYPES
from fedmed.privacy.keys import hkdf

_ZERO_IV = bytes(16)


CHUNK_BYTES = 1 << 18  # 256 KiB: a chunk of the vector stays in cache


def _add_keystreams(target: np.ndarray, keys: list[bytes], signs: list[int]) -> None:
    """``target += sum_k sign_k * AES-CTR(key_k)`` in place, chunk by chunk.

    The keystreams are produced chunk-wise and added while the chunk of
    ``target`` is in cache, so the cost is that of AES itself (AES-NI).
    """
    dtype = np.dtype(target.dtype).newbyteorder("<")
    encryptors = [
        Cipher(algorithms.AES(key), modes.CTR(_ZERO_IV)).encryptor() for key in keys
    ]
    step = max(1, CHUNK_BYTES // dtype.itemsize)
    zeros = bytes(min(target.size, step) * dtype.itemsize)
    buffer = bytearray(len(zeros) + 15)  # CTR may need a spare block
    for start in range(0, target.size, step):
        chunk = target[start : start + step]
        nbytes = chunk.size * dtype.itemsize
        for encryptor, sign in zip(encryptors, signs, strict=True):
            encryptor.update_into(
                zeros[:nbytes] if nbytes < len(zeros) else zeros, buffer
            )
            stream = np.frombuffer(buffer, dtype=dtype, count=chunk.size)
            if sign > 0:
                chunk += stream
            else:
                chunk -= stream


def expand(key: bytes, size: int, bits: int) -> np.ndarray:
    """``size`` ring elements of AES-256-CTR keystream under a one-use ``key``."""
    out = np.zeros(size, dtype=RING_DTYPES[bits])
    _add_keystreams(out, [key], [1])
    return out


def add_masks(target: np.ndarray, keys: list[bytes], signs: list[int]) -> None:
    """Add (+1) or subtract (-1) the masks of ``keys`` to ``target`` in place."""
    if target.dtype.type not in RING_DTYPES.values() or not target.flags.c_contiguous:
        raise ValueError("masks apply to contiguous uint32/uint64 ring vectors")
    _add_keystreams(target, keys, signs)


def self_mask_key(seed: int, run_id: bytes, round_id: int) -> bytes:
    """AES key of a party's self mask from its per-round shared seed."""
    label = b"fedmed/secagg/v2/self-mask" + struct.pack(">q", round_id)
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
    keys = [self_key, *pair_keys.values()]
    signs = [1, *(mask_sign(owner, peer) for peer in pair_keys)]
    add_masks(masked, keys, signs)
    return masked
