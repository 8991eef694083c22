"""Many named arrays as one byte buffer: one Flower object instead of two per tensor.

Flower stores every ``Array`` of a message as its own object (plus a chunk
object) and a SuperNode fetches each with its own HTTP request, signed by the
node and checked by the SuperLink. A LoRA update of a dozen tensors thus cost
a deployed round about thirty requests each way before any work was done.
Packed, an update is one array whatever its tensor count.

Layout of the buffer: ``MAGIC``, the header length (uint32, little endian),
a JSON header ``[[name, dtype, shape, offset, nbytes], ...]`` and the arrays'
raw bytes, each starting at a multiple of ``ALIGN``. Reading checks every
field (known dtype, sizes that agree, offsets inside the buffer, no overlap,
unique names) and raises ``ValueError`` on anything else: the buffer comes
from another party.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping

import numpy as np

MAGIC = b"FMP1"
ALIGN = 8
MAX_HEADER_BYTES = 16 * 2**20
#: The element types fedmed's codecs produce; anything else is refused.
DTYPES = frozenset(
    {"float64", "float32", "float16", "int64", "int32", "int8", "uint8", "bool"}
)
_PREFIX = struct.Struct("<4sI")


def pack_arrays(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """``arrays`` as one uint8 buffer (module doc for the layout)."""
    entries, offset = [], 0
    for name, array in arrays.items():
        if array.dtype.name not in DTYPES:
            raise ValueError(f"array {name!r}: dtype {array.dtype} cannot be packed")
        entries.append(
            [name, array.dtype.name, list(array.shape), offset, array.nbytes]
        )
        offset += _aligned(array.nbytes)
    header = json.dumps(entries, separators=(",", ":")).encode()
    start = _aligned(_PREFIX.size + len(header))
    buffer = np.zeros(start + offset, dtype=np.uint8)
    buffer[: _PREFIX.size] = np.frombuffer(
        _PREFIX.pack(MAGIC, len(header)), dtype=np.uint8
    )
    buffer[_PREFIX.size : _PREFIX.size + len(header)] = np.frombuffer(
        header, dtype=np.uint8
    )
    for (_, _, _, at, size), array in zip(entries, arrays.values(), strict=True):
        flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        buffer[start + at : start + at + size] = flat
    return buffer


def is_packed(buffer: np.ndarray) -> bool:
    """Whether ``buffer`` starts like a packed buffer."""
    return (
        buffer.dtype == np.uint8
        and buffer.ndim == 1
        and buffer.size >= _PREFIX.size
        and bytes(buffer[:4]) == MAGIC
    )


Layout = list[tuple[str, str, tuple[int, ...], int, int]]


def packed_layout(buffer: np.ndarray) -> Layout:
    """The checked header of a packed buffer: ``(name, dtype, shape, start, nbytes)``
    with ``start`` counted from the buffer's beginning."""
    if not is_packed(buffer):
        raise ValueError("not a packed array buffer")
    return read_layout(memoryview(buffer), buffer.size)


def read_layout(head: memoryview | bytes, size: int) -> Layout:
    """:func:`packed_layout` from the first bytes of a packed buffer of ``size``
    bytes: only the header is read, never the arrays."""
    if len(head) < _PREFIX.size or bytes(head[:4]) != MAGIC:
        raise ValueError("not a packed array buffer")
    _, header_len = _PREFIX.unpack_from(head)
    if header_len > min(MAX_HEADER_BYTES, size - _PREFIX.size, len(head)):
        raise ValueError("packed buffer: header length out of range")
    try:
        entries = json.loads(bytes(head[_PREFIX.size : _PREFIX.size + header_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"packed buffer: unreadable header ({err})") from None
    if not isinstance(entries, list):
        raise ValueError("packed buffer: header is not a list")
    start = _aligned(_PREFIX.size + header_len)
    layout, names, end = [], set(), 0
    for entry in entries:
        name, dtype, shape, offset, nbytes = _checked_entry(entry)
        if name in names:
            raise ValueError(f"packed buffer: array {name!r} appears twice")
        if offset < end or start + offset + nbytes > size:
            raise ValueError(f"packed buffer: array {name!r} lies outside its slot")
        names.add(name)
        end = offset + nbytes
        layout.append((name, dtype, shape, start + offset, nbytes))
    return layout


def unpack_arrays(buffer: np.ndarray) -> dict[str, np.ndarray]:
    """The named arrays of a packed buffer (one copy each, writable)."""
    return {
        name: buffer[at : at + nbytes].view(dtype).reshape(shape).copy()
        for name, dtype, shape, at, nbytes in packed_layout(buffer)
    }


def _checked_entry(entry: object) -> tuple[str, str, tuple[int, ...], int, int]:
    if not (isinstance(entry, list) and len(entry) == 5):
        raise ValueError("packed buffer: malformed header entry")
    name, dtype, shape, offset, nbytes = entry
    if not isinstance(name, str) or dtype not in DTYPES:
        raise ValueError("packed buffer: bad array name or dtype")
    if not (
        isinstance(shape, list)
        and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        )
    ):
        raise ValueError(f"packed buffer: bad shape for {name!r}")
    for value in (offset, nbytes):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"packed buffer: bad offset or size for {name!r}")
    if math.prod(shape) * np.dtype(dtype).itemsize != nbytes:
        raise ValueError(f"packed buffer: size of {name!r} does not match its shape")
    return name, dtype, tuple(shape), offset, nbytes


def _aligned(size: int) -> int:
    return -(-size // ALIGN) * ALIGN
