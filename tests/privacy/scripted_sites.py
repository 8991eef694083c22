"""Sites that play a script against a real strategy run (``Strategy.start``).

:class:`ScriptedGrid` is a Grid for ``Strategy.start``: it gives every
pushed message an id (as Flower's grids do), hands it to the site behind its
node id and returns what the site answers. A site is a function of the
message it receives: an honest site trains (moves every value by its own
offset), a dishonest one lies in any field a real ClientApp controls, a
silent one returns None, and a node the SuperLink lost gets the error reply
Flower's own link state generates for it (``src_node_id`` 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from uuid import uuid4

import torch
from flwr.app import Message, RecordDict
from flwr.server.superlink.linkstate.utils import (
    create_message_error_unavailable_res_message,
)
from torch import Tensor

from fedmed.wire import (
    ARRAYS,
    METRICS,
    NUM_EXAMPLES,
    SITE_ID,
    STATISTICS,
    metric_record,
    record_to_state,
    state_to_record,
)

Site = Callable[[Message], Message | None]


class ScriptedGrid:
    """``get_node_ids`` and ``send_and_receive`` over scripted sites."""

    def __init__(self, sites: Mapping[int, Site]) -> None:
        self.sites = dict(sites)
        self.received: list[Message] = []  # every reply, in order

    def get_node_ids(self) -> list[int]:
        return sorted(self.sites)

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())  # as Flower pushes
            reply = self.sites[msg.metadata.dst_node_id](msg)
            if reply is not None:
                replies.append(reply)
        self.received.extend(replies)
        return replies


def received_state(msg: Message) -> dict[str, Tensor]:
    return record_to_state(msg.content[ARRAYS])


def reply(
    msg: Message,
    state: Mapping[str, Tensor] | None,
    site_id: float,
    examples: float,
    **metrics: float,
) -> Message:
    """What a ClientApp sends: the update (train) or statistics (evaluate)."""
    values = {**metrics, NUM_EXAMPLES: examples, SITE_ID: site_id}
    content = RecordDict({METRICS: metric_record(values)})
    if msg.metadata.message_type.startswith("train"):
        content[ARRAYS] = state_to_record(state, "fp32")
    else:
        content[STATISTICS] = metric_record({"counts": [1.0, 2.0]})
    return Message(content, reply_to=msg)


def honest(site_id: int, offset: float, examples: int = 10) -> Site:
    """Trains: every received value moves by ``offset``; evaluates: accuracy 0.5."""

    def answer(msg: Message) -> Message:
        if msg.metadata.message_type.startswith("train"):
            state = {k: v + offset for k, v in received_state(msg).items()}
            return reply(msg, state, site_id, examples, train_loss=1.0)
        return reply(msg, None, site_id, examples, accuracy=0.5)

    return answer


def lying(site_id: int, examples: float, update: Callable | None = None) -> Site:
    """Claims ``examples`` in every reply; ``update(received)`` is what it sends."""

    def answer(msg: Message) -> Message:
        received = received_state(msg)
        state = update(received) if update else {k: v + 1 for k, v in received.items()}
        return reply(msg, state, site_id, examples, train_loss=1.0, accuracy=0.5)

    return answer


def unchanged(site_id: int, examples: int = 10) -> Site:
    """Returns the model it received: a zero-norm update."""

    def answer(msg: Message) -> Message:
        return reply(msg, received_state(msg), site_id, examples, accuracy=0.5)

    return answer


def lost(msg: Message) -> Message:
    """The SuperLink's own error reply for a node whose heartbeat it lost."""
    return create_message_error_unavailable_res_message(msg.metadata, "node_unavail")


def filled_like(state: Mapping[str, Tensor], value: float) -> dict[str, Tensor]:
    return {k: torch.full_like(v, value) for k, v in state.items()}
