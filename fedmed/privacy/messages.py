"""The secure-aggregation messages: small dataclasses <-> flat numpy arrays.

Every message crosses the network as a flat ``str -> numpy array`` mapping:
ints as 0-d int64, party ids as uint64 (0-d or vectors; Flower node ids are
unsigned 64-bit), keys / ciphertexts / shares as uint8 matrices, masked
vectors as uint32/uint64, float matrices for task messages built on
:class:`WireMessage`. It fits a Flower ``ArrayRecord`` as is, or bytes via
safetensors (:meth:`to_bytes`); nothing is ever pickled. ``from_arrays``
validates keys, dtypes and shapes before any value is used and raises
:class:`MessageFormatError` otherwise.

Lists of parties travel as bitmaps over the key directory's order (one bit
per party) and per-neighbour entries as matrix rows in the order of the
recipient's or sender's neighbours, which both ends derive from the
directory (:mod:`fedmed.privacy.graph`): no message carries a neighbour list.

Setup (once per run)               | Each round
server -> party   KeyRequest       | server -> party   MaskRequest (+ KeyDirectory
party  -> server  KeyAdvertisement |                   until the party has it)
                                   | party  -> server  MaskedInput
                                   | server -> party   UnmaskRequest
                                   | party  -> server  UnmaskResponse
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
from safetensors.numpy import load, save

from fedmed.privacy import shamir
from fedmed.privacy.errors import MessageFormatError
from fedmed.privacy.keys import (
    PUBLIC_KEY_BYTES,
    ROUND_KEY_BYTES,
    SEALED_SHARE_BYTES,
)

# kind -> (dtype(s), ndim, row width for uint8 matrices)
_KINDS: dict[str, tuple[tuple[type, ...], int, int | None]] = {
    "int": ((np.int64,), 0, None),
    "id": ((np.uint64,), 0, None),
    "float": ((np.float64,), 0, None),
    "ids": ((np.uint64,), 1, None),
    "bytes": ((np.uint8,), 1, None),
    "keys": ((np.uint8,), 2, PUBLIC_KEY_BYTES),
    "round_keys": ((np.uint8,), 2, ROUND_KEY_BYTES),
    "sealed": ((np.uint8,), 2, SEALED_SHARE_BYTES),
    "shares": ((np.uint8,), 2, shamir.SHARE_BYTES),
    "ring": ((np.uint32, np.uint64), 1, None),
    "matrix": ((np.float32, np.float64), 2, None),
}


def _to_array(kind: str, value: Any) -> np.ndarray:
    if kind == "int":
        return np.asarray(value, dtype=np.int64)
    if kind == "id":
        return np.asarray(value, dtype=np.uint64)
    if kind == "float":
        return np.asarray(value, dtype=np.float64)
    if kind == "ids":
        return np.asarray(value, dtype=np.uint64).reshape(-1)
    if kind == "bytes":
        return np.frombuffer(value, dtype=np.uint8).copy()
    if kind in ("ring", "matrix"):
        return value
    width = _KINDS[kind][2]
    rows = [shamir.to_bytes(v) for v in value] if kind == "shares" else list(value)
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), width)


def _from_array(kind: str, array: np.ndarray) -> Any:
    if kind in ("int", "id"):
        return int(array)
    if kind == "float":
        return float(array)
    if kind == "ids":
        return tuple(int(v) for v in array)
    if kind == "bytes":
        return array.tobytes()
    if kind in ("ring", "matrix"):
        return array
    rows = [row.tobytes() for row in array]
    return (
        tuple(shamir.from_bytes(r) for r in rows) if kind == "shares" else tuple(rows)
    )


class WireMessage:
    """Conversion of a message dataclass to and from flat numpy arrays."""

    kinds: ClassVar[dict[str, str]]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat ``str -> ndarray`` mapping (what goes into an ArrayRecord)."""
        return {
            name: _to_array(k, getattr(self, name)) for name, k in self.kinds.items()
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Self:
        """Validate and decode arrays produced by :meth:`to_arrays`."""
        if set(arrays) != set(cls.kinds):
            raise MessageFormatError(
                f"{cls.__name__}: expected arrays {sorted(cls.kinds)}, "
                f"found {sorted(arrays)}"
            )
        values = {}
        for name, kind in cls.kinds.items():
            array = np.asarray(arrays[name])
            dtypes, ndim, width = _KINDS[kind]
            if array.dtype.type not in dtypes or array.ndim != ndim:
                raise MessageFormatError(
                    f"{cls.__name__}.{name}: expected {ndim}-d "
                    f"{'/'.join(d.__name__ for d in dtypes)}, "
                    f"found {array.ndim}-d {array.dtype}"
                )
            if width is not None and array.shape[1] != width:
                raise MessageFormatError(
                    f"{cls.__name__}.{name}: rows must be {width} bytes, "
                    f"found {array.shape[1]}"
                )
            try:
                values[name] = _from_array(kind, array)
            except ValueError as error:
                raise MessageFormatError(f"{cls.__name__}.{name}: {error}") from None
        return cls(**values)

    def to_bytes(self) -> bytes:
        """Serialise with safetensors (no pickle)."""
        return save(self.to_arrays())

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Inverse of :meth:`to_bytes`."""
        return cls.from_arrays(load(data))

    def payload_bytes(self) -> int:
        """Bytes of array data carried (framing of the transport excluded)."""
        return sum(a.nbytes for a in self.to_arrays().values())


def _check_length(message: object, name: str, value: bytes, expected: int) -> None:
    if len(value) != expected:
        raise MessageFormatError(
            f"{type(message).__name__}.{name}: expected {expected} bytes, "
            f"found {len(value)}"
        )


@dataclass(frozen=True)
class KeyRequest(WireMessage):
    """Setup 1, server -> party: the run id, fixed before any public key exists.

    The directory must carry the same id, so the server cannot choose the
    run id (which seeds the neighbour graph) after seeing the keys.
    """

    kinds: ClassVar = {"run_id": "bytes"}
    run_id: bytes


@dataclass(frozen=True)
class KeyAdvertisement(WireMessage):
    """Setup 2, party -> server: the party's X25519 public key for this run."""

    kinds: ClassVar = {"party": "id", "public_key": "bytes"}
    party: int
    public_key: bytes

    def __post_init__(self) -> None:
        _check_length(self, "public_key", self.public_key, PUBLIC_KEY_BYTES)


@dataclass(frozen=True)
class KeyDirectory(WireMessage):
    """Server -> party, once per run: run id, threshold, graph degree, public keys.

    Travels with a party's first :class:`MaskRequest`. ``threshold`` is the
    Shamir threshold among a party's ``degree`` neighbours; the parties
    refuse values below their own floor.
    """

    kinds: ClassVar = {
        "run_id": "bytes",
        "threshold": "int",
        "degree": "int",
        "parties": "ids",
        "public_keys": "keys",
    }
    run_id: bytes
    threshold: int
    degree: int
    parties: tuple[int, ...]
    public_keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if len(self.parties) != len(self.public_keys):
            raise MessageFormatError(
                f"KeyDirectory: {len(self.parties)} parties but "
                f"{len(self.public_keys)} public keys"
            )


@dataclass(frozen=True)
class MaskRequest(WireMessage):
    """Round 1, server -> party: run, round id and the round's parties (bitmap)."""

    kinds: ClassVar = {"run_id": "bytes", "round_id": "int", "active": "bytes"}
    run_id: bytes
    round_id: int
    active: bytes


@dataclass(frozen=True, eq=False)
class MaskedInput(WireMessage):
    """Round 2, party -> server: masked vector, codec, sealed self-mask shares.

    ``shares`` row ``i`` is for the sender's ``i``-th neighbour in the round.
    """

    kinds: ClassVar = {
        "sender": "id",
        "round_id": "int",
        "bits": "int",
        "value_range": "float",
        "num_summands": "int",
        "masked": "ring",
        "shares": "sealed",
    }
    sender: int
    round_id: int
    bits: int
    value_range: float
    num_summands: int
    masked: np.ndarray
    shares: tuple[bytes, ...]


@dataclass(frozen=True)
class UnmaskRequest(WireMessage):
    """Round 3, server -> surviving party: who survived (bitmap) and its shares.

    ``shares`` row ``i`` comes from the recipient's ``i``-th surviving
    neighbour in the round.
    """

    kinds: ClassVar = {
        "round_id": "int",
        "recipient": "id",
        "survivors": "bytes",
        "shares": "sealed",
    }
    round_id: int
    recipient: int
    survivors: bytes
    shares: tuple[bytes, ...]


@dataclass(frozen=True)
class UnmaskResponse(WireMessage):
    """Round 4, party -> server: one secret per round neighbour, never two.

    ``self_mask_shares[i]``: its share of the ``i``-th surviving neighbour's
    self-mask seed; ``pair_keys[i]``: its round mask key with the ``i``-th
    dropped neighbour.
    """

    kinds: ClassVar = {
        "sender": "id",
        "round_id": "int",
        "self_mask_shares": "shares",
        "pair_keys": "round_keys",
    }
    sender: int
    round_id: int
    self_mask_shares: tuple[int, ...]
    pair_keys: tuple[bytes, ...]


MESSAGE_TYPES: dict[str, type[WireMessage]] = {
    cls.__name__: cls
    for cls in (
        KeyRequest,
        KeyAdvertisement,
        KeyDirectory,
        MaskRequest,
        MaskedInput,
        UnmaskRequest,
        UnmaskResponse,
    )
}
