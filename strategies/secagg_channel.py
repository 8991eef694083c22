"""Secure aggregation over Flower's Message API: the server's channel to the parties.

:func:`fedmed.privacy.protocol.run_setup` and the unmask step of every
round need the same round trips whatever the parties sum, so VFL-CLIP's
image providers (``strategies.vfl_clip``) and a horizontal run's sites
(``strategies.secure_fedavg``) share :class:`FlowerParties` (key setup in
one round trip, the unmask step); each adds its own ``mask`` step.
:class:`Transport` sends named actions to nodes and counts every payload's
bytes per site into a :class:`fedmed.runs.RoundTally` (one metrics row). A
node that errs or times out is logged and left out of the replies
(:func:`strategies.replies.screen_replies`), which the protocol counts as a
dropout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedmed.privacy import RoundStart, SecAggError
from fedmed.privacy.messages import (
    KeyAdvertisement,
    KeyRequest,
    MaskedInput,
    UnmaskRequest,
    UnmaskResponse,
    WireMessage,
)
from fedmed.runs import RoundTally
from fedmed.wire import payload_bytes
from fedmed.wire.secagg import (
    REPLY,
    SITE_PARTY,
    PartyActions,
    from_record,
    request_content,
)
from strategies.replies import record_silent, screen_replies


class SetupIncomplete(SecAggError):
    """Parties failed during the key setup; the run cannot rely on their shares."""


@dataclass
class Transport:
    """Round trips to named nodes, with byte counts; failed replies are left out."""

    grid: Grid
    timeout: float
    tally: RoundTally

    def exchange(
        self, action: str, contents: Mapping[str, RecordDict], nodes: Mapping[str, int]
    ) -> dict[str, RecordDict]:
        """Send ``contents[site]`` to ``nodes[site]`` as ``train.<action>``."""
        messages = []
        for site, content in contents.items():
            self.tally.sent(site, payload_bytes(content))
            kind = action if "." in action else f"train.{action}"
            messages.append(
                Message(content=content, dst_node_id=nodes[site], message_type=kind)
            )
        sites = {node: site for site, node in nodes.items()}
        answered = screen_replies(
            self.grid.send_and_receive(messages, timeout=self.timeout),
            lambda content: content,
            self.tally,
            where=action,
            site_of=lambda reply: sites[reply.metadata.src_node_id],
        )
        record_silent(
            self.tally,
            sorted(contents),
            (a.site for a in answered),
            where=action,
            timeout_s=self.timeout,
        )
        return {a.site: a.content for a in answered}


@dataclass
class FlowerParties:
    """:class:`fedmed.privacy.protocol.PartyChannel` steps every protocol shares.

    Subclasses name their actions (:class:`PartyActions`), the parties in
    error messages, and implement ``mask`` (with :func:`round_content`, which
    carries the key directory to a party until it has it). The channel is a
    secure sum over whatever parties the subclass reaches.
    """

    actions: ClassVar[PartyActions]
    party_noun: ClassVar[str] = "parties"
    setup_error: ClassVar[type[Exception]] = SetupIncomplete

    transport: Transport
    nodes: dict[int, int]  # party -> node id

    def _exchange(
        self,
        step: str,
        contents: Mapping[int, RecordDict],
        kind: type[WireMessage] | None,
    ) -> dict[int, Any]:
        nodes = {str(p): self.nodes[p] for p in contents}
        replies = self.transport.exchange(
            self.actions.action(step), {str(p): c for p, c in contents.items()}, nodes
        )
        if kind is None:
            return {int(s): r for s, r in replies.items()}
        return {int(s): from_record(kind, r[REPLY]) for s, r in replies.items()}

    def advertise(
        self, request: KeyRequest, parties: Sequence[int]
    ) -> dict[int, KeyAdvertisement]:
        """Setup: every party's public key; a silent party fails the setup."""
        contents = {p: request_content(request) for p in parties}
        ads = self._exchange("keys", contents, KeyAdvertisement)
        missing = sorted(set(parties) - set(ads))
        if missing:
            raise self.setup_error(
                f"{self.party_noun} {missing} failed during the key setup; restart "
                "the run once they are reachable"
            )
        return ads

    def mask(
        self, starts: Mapping[int, RoundStart], job: Any
    ) -> dict[int, MaskedInput]:
        raise NotImplementedError(f"{type(self).__name__} does not mask")

    def unmask(
        self, requests: Mapping[int, UnmaskRequest]
    ) -> dict[int, UnmaskResponse]:
        contents = {p: request_content(r) for p, r in requests.items()}
        return self._exchange("unmask", contents, UnmaskResponse)


@dataclass
class SiteParties(FlowerParties):
    """The secure-aggregation channel to a horizontal run's sites (party = site id)."""

    actions = SITE_PARTY
    party_noun = "sites"

    ads: dict[int, KeyAdvertisement] = field(default_factory=dict)

    def discover(
        self, request: KeyRequest, nodes: Sequence[int]
    ) -> dict[int, KeyAdvertisement]:
        """Ask every node for fresh public keys; learn which site each node is."""
        labels = {f"node-{n}": n for n in nodes}
        replies = self.transport.exchange(
            self.actions.action("keys"),
            {k: request_content(request) for k in labels},
            labels,
        )
        for label, content in replies.items():
            ad = from_record(KeyAdvertisement, content[REPLY])
            if ad.party in self.ads:
                raise SetupIncomplete(
                    f"nodes {self.nodes[ad.party]} and {labels[label]} both are site "
                    f"{ad.party}; give every site its own site-id"
                )
            self.ads[ad.party], self.nodes[ad.party] = ad, labels[label]
        self.transport.tally.relabel(
            {f"node-{n}": str(p) for p, n in self.nodes.items()}
        )
        return self.ads

    def advertise(
        self, request: KeyRequest, parties: Sequence[int]
    ) -> dict[int, KeyAdvertisement]:
        return {p: self.ads[p] for p in parties}


def party_label(party_of: Mapping[int, str], msg: Message) -> str:
    """The party a reply comes from; ``node-<id>`` for a sender that is no party
    (an error the SuperLink generated: the party that never answered is then
    recorded as silent by :func:`strategies.replies.record_silent`)."""
    sender = msg.metadata.src_node_id
    return party_of.get(sender, f"node-{sender}")
