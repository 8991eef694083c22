"""Which site a reply comes from: its authenticated node id, never its payload.

Flower authenticates nodes, not what they write: a reply's ``site-id``
metric is whatever the site chooses to say, so a dishonest site could
report under another site's name. Replies are attributed through the node
id the SuperLink vouches for, by the first source that knows it:

1. deployment: the coordinator's site register (``$FEDMED_SITE_REGISTRY``,
   :func:`fedmed.deploy.registry.site_of_node`): the node id a site
   registered with node authentication gives its registered name;
2. simulation (Flower's in-memory grid): the partition id. Flower 1.42
   tells the ServerApp no node's ``node_config``, but its simulation
   registers node ``i`` of ``num-supernodes`` as partition ``i``, in order
   (``vce_api._register_nodes``), in the link state the in-memory grid
   holds, whose node table keeps that order;
3. otherwise (a grid that offers neither): the ``site-id`` a node claims in
   its first reply, pinned to that node id. A later reply claiming another
   site, or a second node claiming a pinned site, is refused.

With 1 and 2 a ``site-id`` claim is ignored: it never changes a label. A
node no source knows is ``node-<id>``. Errors the SuperLink generates itself
(a node's heartbeat lost, a reply expired) come from node id 1; they are
attributed to the destination of the message they answer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from flwr.app import Message
from flwr.common.constant import SUPERLINK_NODE_ID

from fedmed.comm.selection import UpdateRejected
from fedmed.deploy.registry import REGISTRY_ENV, site_of_node
from fedmed.wire import METRICS, SITE_ID


class SiteDirectory(Protocol):
    """An authenticated source of node id -> site name."""

    source: str

    def site_of(self, node_id: int) -> str | None:
        """The site behind ``node_id``; None when this source does not know it."""


class RegistryDirectory:
    """Deployment: the site register's node ids (current and retired)."""

    source = "registry"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._known: dict[int, str] = {}

    def site_of(self, node_id: int) -> str | None:
        if node_id not in self._known:  # re-read: a site may have registered since
            name = site_of_node(node_id, self.path)
            if name is None:
                return None
            self._known[node_id] = name
        return self._known[node_id]


class SimulationDirectory:
    """Simulation: the partition id of each node of Flower's in-memory link state."""

    source = "partition-id"

    def __init__(self, link_state) -> None:
        self.link_state = link_state
        self._partitions: dict[int, int] = {}

    def site_of(self, node_id: int) -> str | None:
        if node_id not in self._partitions:
            infos = self.link_state.get_node_info()  # registration order
            self._partitions = {info.node_id: i for i, info in enumerate(infos)}
        partition = self._partitions.get(node_id)
        return None if partition is None else str(partition)


def directory_for(grid: object) -> SiteDirectory | None:
    """The authenticated source this grid's run offers (module doc), if any."""
    registry = os.environ.get(REGISTRY_ENV)
    if registry:
        return RegistryDirectory(Path(registry))
    from flwr.superlink.grid import InMemoryGrid  # simulation only

    if isinstance(grid, InMemoryGrid):
        return SimulationDirectory(grid.state)
    return None


class SiteIdentity:
    """Labels replies by node id; remembers what was asked of whom."""

    def __init__(self, directory: SiteDirectory | None = None) -> None:
        self.directory = directory
        self.source = directory.source if directory is not None else "first-claim"
        self._pinned: dict[int, str] = {}
        self._asked: list[Message] = []

    def of_node(self, node_id: int) -> str:
        """The site's label, or ``node-<id>`` while no source knows the node."""
        if self.directory is not None:
            name = self.directory.site_of(node_id)
        else:
            name = self._pinned.get(node_id)
        return name if name is not None else f"node-{node_id}"

    def asked(self, messages: Iterable[Message]) -> None:
        """Keep this round's messages: Flower sets their ids when it pushes them."""
        self._asked = list(messages)

    def asked_nodes(self) -> set[int]:
        """The nodes this round's messages went to."""
        return {ask.metadata.dst_node_id for ask in self._asked}

    def node_of(self, msg: Message) -> int:
        """The node a reply is about: its sender, or for an error the SuperLink
        generated, the destination of the message it answers."""
        if msg.metadata.src_node_id != SUPERLINK_NODE_ID:
            return msg.metadata.src_node_id
        answered = msg.metadata.reply_to_message_id
        for ask in self._asked:
            if ask.metadata.message_id == answered:
                return ask.metadata.dst_node_id
        return SUPERLINK_NODE_ID

    def site_of(self, msg: Message) -> str:
        """The label of the site a reply is about (pinning a first claim)."""
        node = self.node_of(msg)
        if self.directory is None and node not in self._pinned:
            claim = _claimed_site(msg)
            if claim is not None and claim not in self._pinned.values():
                self._pinned[node] = claim
        return self.of_node(node)

    def vet(self, msg: Message, site: str) -> None:
        """Refuse a reply whose claimed site contradicts its node's pinned one."""
        if self.directory is not None:
            return  # claims are ignored, not trusted
        claim = _claimed_site(msg)
        if claim is not None and claim != site:
            raise UpdateRejected(
                "site-id differs from the site this node first claimed (replies "
                "are attributed by node id)"
            )


def _claimed_site(msg: Message) -> str | None:
    """The ``site-id`` a reply states, as a label; None if absent or not a number."""
    if msg.has_error():
        return None
    value = msg.content.get(METRICS, {}).get(SITE_ID)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value != value or value in (float("inf"), float("-inf")) or value != int(value):
        return None
    return str(int(value))
