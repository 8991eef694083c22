"""Everything Flower carries for fedmed: message keys, actions, record codecs.

The only part of ``fedmed/`` that imports Flower. ``clients/`` (the site
side) and ``strategies/`` (the server side) both speak through it and never
import each other: :mod:`fedmed.wire.records` holds the keys and tensor
codecs of every message, :mod:`fedmed.wire.secagg` the secure-aggregation
actions and protocol-message codecs, :mod:`fedmed.wire.vfl` VFL-CLIP's
actions and keys.
"""

from fedmed.wire.records import (
    ARRAYS,
    CONFIG,
    EVALUATE_FIRST,
    METRICS,
    NUM_EXAMPLES,
    PRIOR,
    SERVER_ROUND,
    SITE_ID,
    STATISTICS,
    arrays_to_record,
    describe_payload,
    metric_record,
    payload_bytes,
    prior_evaluation,
    record_to_arrays,
    record_to_state,
    state_to_record,
)

__all__ = [
    "ARRAYS",
    "CONFIG",
    "EVALUATE_FIRST",
    "METRICS",
    "NUM_EXAMPLES",
    "PRIOR",
    "SERVER_ROUND",
    "SITE_ID",
    "STATISTICS",
    "arrays_to_record",
    "describe_payload",
    "metric_record",
    "payload_bytes",
    "prior_evaluation",
    "record_to_arrays",
    "record_to_state",
    "state_to_record",
]
