"""Message keys and tensor codecs every fedmed message shares.

Wire keys use Flower's spellings. States travel as ``ArrayRecord`` of numpy
arrays produced by :mod:`fedmed.comm.codecs`; nothing is ever pickled.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from torch import Tensor

from fedmed.comm.codecs import decode, encode

ARRAYS = "arrays"
METRICS = "metrics"
CONFIG = "config"
STATISTICS = "statistics"
NUM_EXAMPLES = "num-examples"
SITE_ID = "site-id"
SERVER_ROUND = "server-round"
#: Train config flag: evaluate the received model before training on it, and
#: send that evaluation with the update (one message per round).
EVALUATE_FIRST = "evaluate-first"
#: Where a train reply carries that evaluation: ``PRIOR + METRICS`` etc.
PRIOR = "evaluated-"


def state_to_record(state: Mapping[str, Tensor], codec: str) -> ArrayRecord:
    """Encode a tensor state for the wire."""
    encoded = encode(state, codec)
    return arrays_to_record({k: np.ascontiguousarray(v) for k, v in encoded.items()})


def record_to_state(record: ArrayRecord) -> dict[str, Tensor]:
    """Decode an ``ArrayRecord`` back to float32 tensors."""
    return decode(record_to_arrays(record))


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
            shape[key] = {name: len(array.data) for name, array in record.items()}
        elif isinstance(record, MetricRecord | ConfigRecord):
            shape[key] = {name: _value_bytes(v) for name, v in record.items()}
    return shape


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
