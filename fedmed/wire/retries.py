"""How fedmed's deployment processes wait for a message object still in flight.

A message is listed before all its objects have arrived (the ServerApp, a
SuperNode or a site's runner may ask while the sender is still uploading).
Flower retries an unavailable object after 1 s, doubling up to 10 s, at most
500 times within 2 h. fedmed's processes ask promptly instead: after 50 ms,
then up to 0.5 s apart; and they stop on Flower's time bound only, because
500 tries that short give up after about 4 minutes, before a paper-size
update (343 MB) has crossed a 10 Mbit/s link.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

RETRY_FIRST_S, RETRY_CAP_S = 0.05, 0.5


def prompt_retries(pull: Callable[..., Any]) -> partial[Any]:
    """``pull`` (Flower's ``pull_objects`` or ``pull_and_inflate_object_from_tree``)
    with the retries above."""
    return partial(
        pull,
        initial_backoff=RETRY_FIRST_S,
        backoff_cap=RETRY_CAP_S,
        max_tries_per_object=None,  # bounded in time (Flower's PULL_MAX_TIME) only
    )
