"""The secure-aggregation messages: small dataclasses <-> flat numpy arrays.

Every message crosses the network as a flat ``str -> numpy array`` mapping:
ints as 0-d int64, party ids as uint64 (0-d or vectors; Flower node ids are
unsigned 64-bit), keys / ciphertexts / shares as uint8 matrices, masked
vectors as uint32/uint64, float matrices for task messages built on
:class:`WireMessage`. It fits a Flower ``ArrayRecord`` as is, or bytes via
safetensors (:meth:`to_bytes`); nothing is ever pickled. ``from_arrays``
validates keys, dtypes and shapes before any value is used and raises
:class:`MessageFormatError` otherwise.

Setup (once per run)                   | Each round
party  -> server  KeyAdvertisement     | server -> party   MaskRequest
server -> party   KeyDirectory         | party  -> server  MaskedInput
party  -> server  SetupShares          | server -> party   UnmaskRequest
server -> party   SetupSharesDelivery  | party  -> server  UnmaskResponse
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
from safetensors.numpy import load, save

from fedmed.privacy import shamir
from fedmed.privacy.errors import MessageFormatError
from fedmed.privacy.keys import CIPHERTEXT_BYTES, PUBLIC_KEY_BYTES

# kind -> (dtype(s), ndim, row width for uint8 matrices)
_KINDS: dict[str, tuple[tuple[type, ...], int, int | None]] = {
    "int": ((np.int64,), 0, None),
    "id": ((np.uint64,), 0, None),
    "float": ((np.float64,), 0, None),
    "ids": ((np.uint64,), 1, None),
    "bytes": ((np.uint8,), 1, None),
    "keys": ((np.uint8,), 2, PUBLIC_KEY_BYTES),
    "ciphertexts": ((np.uint8,), 2, CIPHERTEXT_BYTES),
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


def _check_pairs(message: object, ids: tuple[int, ...], blobs: tuple) -> None:
    if len(ids) != len(blobs):
        raise MessageFormatError(
            f"{type(message).__name__}: {len(ids)} ids but {len(blobs)} entries"
        )


@dataclass(frozen=True)
class KeyAdvertisement(WireMessage):
    """Setup 1, party -> server: the party's two X25519 public keys."""

    kinds: ClassVar = {"party": "id", "mask_public": "bytes", "share_public": "bytes"}
    party: int
    mask_public: bytes
    share_public: bytes

    def __post_init__(self) -> None:
        for key in (self.mask_public, self.share_public):
            if len(key) != PUBLIC_KEY_BYTES:
                raise MessageFormatError(
                    f"KeyAdvertisement: public keys are {PUBLIC_KEY_BYTES} bytes, "
                    f"found {len(key)}"
                )


@dataclass(frozen=True)
class KeyDirectory(WireMessage):
    """Setup 2, server -> every party: run id, threshold and all public keys."""

    kinds: ClassVar = {
        "run_id": "bytes",
        "threshold": "int",
        "parties": "ids",
        "mask_publics": "keys",
        "share_publics": "keys",
    }
    run_id: bytes
    threshold: int
    parties: tuple[int, ...]
    mask_publics: tuple[bytes, ...]
    share_publics: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_pairs(self, self.parties, self.mask_publics)
        _check_pairs(self, self.parties, self.share_publics)


@dataclass(frozen=True)
class SetupShares(WireMessage):
    """Setup 3, party -> server: encrypted shares of its mask-key seed, per peer."""

    kinds: ClassVar = {
        "sender": "id",
        "recipients": "ids",
        "ciphertexts": "ciphertexts",
    }
    sender: int
    recipients: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_pairs(self, self.recipients, self.ciphertexts)


@dataclass(frozen=True)
class SetupSharesDelivery(WireMessage):
    """Setup 4, server -> party: the shares addressed to it and who took part."""

    kinds: ClassVar = {
        "recipient": "id",
        "participants": "ids",
        "senders": "ids",
        "ciphertexts": "ciphertexts",
    }
    recipient: int
    participants: tuple[int, ...]
    senders: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_pairs(self, self.senders, self.ciphertexts)


@dataclass(frozen=True)
class MaskRequest(WireMessage):
    """Round 1, server -> party: round id and the parties still in the run."""

    kinds: ClassVar = {"round_id": "int", "active": "ids"}
    round_id: int
    active: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class MaskedInput(WireMessage):
    """Round 2, party -> server: masked vector, codec, encrypted self-mask shares."""

    kinds: ClassVar = {
        "sender": "id",
        "round_id": "int",
        "bits": "int",
        "value_range": "float",
        "num_summands": "int",
        "masked": "ring",
        "recipients": "ids",
        "ciphertexts": "ciphertexts",
    }
    sender: int
    round_id: int
    bits: int
    value_range: float
    num_summands: int
    masked: np.ndarray
    recipients: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_pairs(self, self.recipients, self.ciphertexts)


@dataclass(frozen=True)
class UnmaskRequest(WireMessage):
    """Round 3, server -> surviving party: who survived, who dropped, its shares."""

    kinds: ClassVar = {
        "round_id": "int",
        "survivors": "ids",
        "dropped": "ids",
        "senders": "ids",
        "ciphertexts": "ciphertexts",
    }
    round_id: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    senders: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_pairs(self, self.senders, self.ciphertexts)


@dataclass(frozen=True)
class UnmaskResponse(WireMessage):
    """Round 4, party -> server: self-mask shares of survivors, key shares of dropped.

    ``self_mask_owners`` always starts with the sender (its own share).
    """

    kinds: ClassVar = {
        "sender": "id",
        "round_id": "int",
        "self_mask_owners": "ids",
        "self_mask_shares": "shares",
        "mask_key_owners": "ids",
        "mask_key_shares": "shares",
    }
    sender: int
    round_id: int
    self_mask_owners: tuple[int, ...]
    self_mask_shares: tuple[int, ...]
    mask_key_owners: tuple[int, ...]
    mask_key_shares: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_pairs(self, self.self_mask_owners, self.self_mask_shares)
        _check_pairs(self, self.mask_key_owners, self.mask_key_shares)


MESSAGE_TYPES: dict[str, type[WireMessage]] = {
    cls.__name__: cls
    for cls in (
        KeyAdvertisement,
        KeyDirectory,
        SetupShares,
        SetupSharesDelivery,
        MaskRequest,
        MaskedInput,
        UnmaskRequest,
        UnmaskResponse,
    )
}
