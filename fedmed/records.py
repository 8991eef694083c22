"""The only fedmed module that knows Flower's record types.

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


def state_to_record(state: Mapping[str, Tensor], codec: str) -> ArrayRecord:
    """Encode a tensor state for the wire."""
    record = ArrayRecord()
    for name, array in encode(state, codec).items():
        record[name] = Array(np.ascontiguousarray(array))
    return record


def record_to_state(record: ArrayRecord) -> dict[str, Tensor]:
    """Decode an ``ArrayRecord`` back to float32 tensors."""
    return decode({name: record[name].numpy() for name in record})


def payload_bytes(content: RecordDict) -> int:
    """Bytes of a message's payload: every array, metric and config record."""
    total = 0
    for record in content.values():
        if isinstance(record, ArrayRecord | MetricRecord | ConfigRecord):
            total += record.count_bytes()
    return total


def metric_record(values: Mapping[str, float | int | list[float]]) -> MetricRecord:
    """A MetricRecord from plain numbers (NaN kept as float)."""
    return MetricRecord(
        {k: v if isinstance(v, list) else float(v) for k, v in values.items()}
    )
