"""Client plumbing in one place: which site a node is, error guarding, registration.

Every handler of the ClientApp is written as *work*: ``(msg, context,
platform) -> RecordDict``, the run's platform keys parsed once per message.
:func:`register_actions` turns work into Flower handlers; :func:`guard_mod`,
installed on the whole ClientApp, turns any exception into an error reply that
carries the site and the full traceback, so the server logs it the moment it
arrives instead of the run waiting on a silent worker. :func:`site_model` is the
model a message works on: private trainable state over a frozen backbone built
once per process (:data:`BACKBONES`) and shared by every site it serves.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from logging import ERROR

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.constant import ErrorCode
from flwr.supercore import log
from torch import nn

from fedmed.config import PlatformConfig, parse_platform
from fedmed.tasks import Task, list_tasks
from fedmed.tasks.backbones import BackboneCache

Work = Callable[[Message, Context, PlatformConfig], RecordDict]

#: The process's frozen backbones (a simulation actor or a site worker serves
#: many messages and sites); one object, owned here, bounded.
BACKBONES = BackboneCache(max_entries=2)


def site_of(context: Context) -> int:
    """Site number: ``site-id`` in a deployment, ``partition-id`` in simulation."""
    node = context.node_config
    return int(node.get("site-id", node.get("partition-id", -1)))


def platform_of(context: Context) -> PlatformConfig:
    """The run's platform keys, every run-config key checked against the tasks."""
    return parse_platform(context.run_config, list_tasks())


def site_model(task: Task) -> nn.Module:
    """The model one message trains or evaluates: fresh adapters, shared backbone."""
    return BACKBONES.model(task)


def guard_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """A Flower mod: any exception becomes an error reply naming the site."""
    try:
        return call_next(msg, context)
    except Exception:  # noqa: BLE001 - every failure must reach the server, with context
        reason = f"site {site_of(context)}: {traceback.format_exc()}"
        log(ERROR, "%s", reason)
        return Message(
            Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
            reply_to=msg,
        )


def handler(work: Work) -> ClientAppCallable:
    """A Flower handler replying with what ``work`` returns."""

    def handle(msg: Message, context: Context) -> Message:
        return Message(work(msg, context, platform_of(context)), reply_to=msg)

    return handle


def with_mods(call: ClientAppCallable, mods: Sequence[Mod]) -> ClientAppCallable:
    """``call`` wrapped in ``mods`` as Flower wraps a handler (first = outermost)."""
    for mod in reversed(mods):
        call = partial(mod, call_next=call)
    return call


def register_actions(
    app: ClientApp,
    actions: Mapping[str, Work],
    *,
    category: str = "train",
    mods: Sequence[Mod] = (),
) -> None:
    """Register every ``work`` as the named action ``<category>.<name>``."""
    decorate = {"train": app.train, "evaluate": app.evaluate, "query": app.query}
    for name, work in actions.items():
        decorate[category](name, mods=list(mods))(handler(work))
