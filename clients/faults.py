"""Scripted fault injection as a Flower client mod (``faults=nan@1:2,...``).

:func:`fault_mod` wraps the handlers whose failure a test or the fault
benchmark scripts (local training, and the masking steps of secure
aggregation and VFL-CLIP); the plan itself is :mod:`fedmed.faults`'s. Before
the handler runs, ``raise`` crashes the site and ``sleep`` stalls it past the
round timeout; after it, ``nan`` / ``shape`` corrupt the update in the reply
``examples`` inflates its example count and ``unchanged`` sends back the
model received.
Nothing happens unless the run config names faults.
"""

from __future__ import annotations

import time

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

from clients.site import platform_of, site_of
from fedmed.faults import (
    INFLATED_EXAMPLES,
    InjectedFault,
    corrupt_update,
    faults_for,
    parse_faults,
)
from fedmed.wire import (
    ARRAYS,
    CONFIG,
    METRICS,
    NUM_EXAMPLES,
    SERVER_ROUND,
    record_to_state,
    state_to_record,
)


def fault_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """A Flower mod applying the faults scripted for this site and round."""
    platform = platform_of(context)
    if not platform.faults:
        return call_next(msg, context)
    server_round = int(msg.content[CONFIG].get(SERVER_ROUND, 0))
    kinds = faults_for(parse_faults(platform.faults), site_of(context), server_round)
    if "raise" in kinds:
        raise InjectedFault(f"scripted crash in round {server_round}")
    if "sleep" in kinds:
        time.sleep(platform.fault_sleep_s)
    reply = call_next(msg, context)
    if {"nan", "shape"} & kinds and not reply.has_error() and ARRAYS in reply.content:
        update = corrupt_update(record_to_state(reply.content[ARRAYS]), kinds)
        reply.content[ARRAYS] = state_to_record(update, platform.comm_dtype)
    if "unchanged" in kinds and not reply.has_error() and ARRAYS in reply.content:
        reply.content[ARRAYS] = msg.content[ARRAYS]
    if "examples" in kinds and not reply.has_error() and METRICS in reply.content:
        reply.content[METRICS][NUM_EXAMPLES] = INFLATED_EXAMPLES
    return reply
