"""Message keys and tensor codecs every fedmed message shares.

Wire keys use Flower's spellings. A tensor state travels as an
``ArrayRecord`` holding one packed array (``PACKED``: the arrays
:mod:`fedmed.comm.codecs` produces, laid out by :mod:`fedmed.wire.packing`),
so a message costs the same few Flower objects whatever its tensor count;
nothing is ever pickled.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from torch import Tensor

from fedmed.comm.codecs import decode, encode
from fedmed.wire.packing import Layout, pack_arrays, read_layout, unpack_arrays

ARRAYS = "arrays"
METRICS = "metrics"
CONFIG = "config"
STATISTICS = "statistics"
NUM_EXAMPLES = "num-examples"
SITE_ID = "site-id"
SERVER_ROUND = "server-round"
#: The one array of a packed tensor state.
PACKED = "packed-state"
#: Train config flag: evaluate the received model before training on it, and
#: send that evaluation with the update (one message per round).
EVALUATE_FIRST = "evaluate-first"
#: Where a train reply carries that evaluation: ``PRIOR + METRICS`` etc.
PRIOR = "evaluated-"
NPY_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def state_to_record(state: Mapping[str, Tensor], codec: str) -> ArrayRecord:
    """Encode a tensor state for the wire: one packed array."""
    return ArrayRecord({PACKED: Array(pack_arrays(encode(state, codec)))})


def record_to_state(record: ArrayRecord) -> dict[str, Tensor]:
    """Decode an ``ArrayRecord`` back to float32 tensors (packed, or one array
    per tensor as :func:`arrays_to_record` writes them)."""
    return decode(_unpacked(record))


def _unpacked(record: ArrayRecord) -> dict[str, np.ndarray]:
    if PACKED not in record:
        return record_to_arrays(record)
    if len(record) != 1:
        raise ValueError(
            f"a packed state comes alone in its record, found {list(record)}"
        )
    return unpack_arrays(record[PACKED].numpy())


def arrays_to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Flat numpy arrays as an ``ArrayRecord`` (raw bytes, never pickled)."""
    return ArrayRecord({name: Array(array) for name, array in arrays.items()})


def record_to_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The numpy arrays of an ``ArrayRecord``, by name."""
    return {name: record[name].numpy() for name in record}


def payload_bytes(content: RecordDict) -> int:
    """Bytes of a message's payload: every array, metric and config record."""
    total = 0
    for record in content.values():
        if isinstance(record, ArrayRecord | MetricRecord | ConfigRecord):
            total += record.count_bytes()
    return total


def describe_payload(content: RecordDict) -> dict[str, dict[str, int]]:
    """What a message carries, entry by entry: ``{record: {entry: bytes}}``.

    Bytes are the value's as Flower counts them (an array's serialised data,
    numpy header included; 8 per metric number; a config string's UTF-8), so
    a run can state exactly which tensors, metrics and statistics crossed the
    network and how large.
    """
    shape: dict[str, dict[str, int]] = {}
    for key, record in content.items():
        if isinstance(record, ArrayRecord):
            shape[key] = _array_sizes(record)
        elif isinstance(record, MetricRecord | ConfigRecord):
            shape[key] = {name: _value_bytes(v) for name, v in record.items()}
    return shape


def _array_sizes(record: ArrayRecord) -> dict[str, int]:
    """Bytes per array; a packed state's tensors by name (raw bytes), its
    header and padding under ``PACKED``."""
    sizes = {name: len(array.data) for name, array in record.items()}
    if PACKED not in sizes:
        return sizes
    try:
        layout = _layout_of(record[PACKED])
    except ValueError:
        return sizes  # unreadable: counted whole, refused where it is read
    inner = {name: nbytes for name, _, _, _, nbytes in layout}
    inner[PACKED] = sizes.pop(PACKED) - sum(inner.values())
    return {**sizes, **inner}


def _layout_of(array: Array) -> Layout:
    """A packed array's layout read from its serialised bytes (numpy's header,
    then the packing header) without deserialising the payload: the ledger
    describes every message, and a message may carry hundreds of megabytes."""
    stream = io.BytesIO(array.data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = NPY_HEADERS.get(version)
        if read_header is None:
            raise ValueError(f"numpy format version {version}")
        shape, _, dtype = read_header(stream)
    except (ValueError, OSError, SyntaxError) as err:
        raise ValueError(f"not a numpy array ({err})") from None
    if dtype != np.uint8 or len(shape) != 1:
        raise ValueError("not a packed array buffer")
    return read_layout(memoryview(array.data)[stream.tell() :], shape[0])


def _value_bytes(value: object) -> int:
    if isinstance(value, list):
        return sum(_value_bytes(v) for v in value)
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bytes):
        return len(value)
    return 8  # numbers and booleans travel as 64-bit values


def metric_record(values: Mapping[str, float | int | list[float]]) -> MetricRecord:
    """A MetricRecord from plain numbers (NaN kept as float)."""
    return MetricRecord(
        {k: v if isinstance(v, list) else float(v) for k, v in values.items()}
    )


def prior_evaluation(content: RecordDict) -> RecordDict | None:
    """The evaluation a train reply carries (``evaluate-first``), as the content
    of an evaluate reply (``metrics``, optional ``statistics``); None if absent."""
    if PRIOR + METRICS not in content:
        return None
    evaluation = RecordDict({METRICS: content[PRIOR + METRICS]})
    if PRIOR + STATISTICS in content:
        evaluation[STATISTICS] = content[PRIOR + STATISTICS]
    return evaluation
