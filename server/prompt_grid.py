"""Replies collected as they arrive, in the order the messages were sent.

Flower 1.42's deployment grid (``HttpGrid.send_and_receive``) looks for replies
every 3 s, so each phase of a deployed round waits 1.5 s on average after the
last site answered (simulation's in-memory grid polls every 0.1 s): with a
train and an evaluate phase that alone breaks a 2 s budget for the fixed cost
of a round. :func:`prompt_replies` replaces the method on that grid with one
that polls the SuperLink every 50 ms at first, backing off to 0.25 s for long
rounds, and returns the replies in the order of the messages they answer (the
strategies add accepted replies up in site order in any case:
:func:`strategies.replies.screen_replies`). A reply
seen that early may still be uploading its objects: the grid retries those
promptly (:mod:`fedmed.wire.retries`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from functools import partial

from flwr.app import Message
from flwr.serverapp import Grid

from fedmed.wire.retries import prompt_retries

FIRST_POLL_S = 0.05
MAX_POLL_S = 0.25


def prompt_replies(grid: Grid) -> Grid:
    """``grid`` with a prompt ``send_and_receive`` when it is a deployment grid."""
    from flwr.superlink.grid import http_grid

    if not isinstance(grid, http_grid.HttpGrid):
        return grid
    if not isinstance(http_grid.pull_objects, partial):
        http_grid.pull_objects = prompt_retries(http_grid.pull_objects)
    grid.send_and_receive = lambda messages, *, timeout=None: send_and_receive(
        grid, messages, timeout=timeout
    )
    return grid


def send_and_receive(
    grid: Grid, messages: Iterable[Message], *, timeout: float | None = None
) -> list[Message]:
    """Push ``messages``, pull replies until all came or ``timeout`` passed."""
    sent = list(grid.push_messages(messages))
    order = {message_id: k for k, message_id in enumerate(sent)}
    waiting = set(sent)
    end = time.monotonic() + (timeout if timeout is not None else 0.0)
    replies: list[Message] = []
    pause = FIRST_POLL_S
    while waiting and (timeout is None or time.monotonic() < end):
        arrived = list(grid.pull_messages(waiting))
        replies.extend(arrived)
        waiting -= {reply.metadata.reply_to_message_id for reply in arrived}
        if waiting:
            time.sleep(pause)
            pause = min(MAX_POLL_S, pause * 1.25)
    replies.sort(key=lambda reply: order.get(reply.metadata.reply_to_message_id, 0))
    return replies
