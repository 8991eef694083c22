"""VFL-CLIP's channels to several knowledge providers over Flower's Message API.

With ``vfl-clip.knowledge-providers = K >= 2`` the server reaches the
knowledge providers through :class:`fedmed.tasks.vfl_clip.knowledge.SecureKnowledge`:
a secure sum of their ``[T_k, s_k]`` (actions of
:data:`fedmed.wire.vfl.VFL_TEXT_PARTY`, party id = knowledge-id, its own key
setup and server) and one ``train.vfl_apply`` per provider for the
aggregated gradient, which each answers with the pooled loss only. The
server thus holds the mean ``T`` and never a provider's ``T_k`` or context;
it checkpoints that mean (:func:`fedmed.tasks.vfl_clip.knowledge.published_state`).
Byte counts go to per-provider labels ``knowledge-<k>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flwr.app import RecordDict

from fedmed.privacy import RoundStart, SecAggServer
from fedmed.privacy.messages import MaskedInput, WireMessage
from fedmed.privacy.protocol import run_setup
from fedmed.tasks.vfl_clip.config import VflClipConfig
from fedmed.tasks.vfl_clip.knowledge import SecureKnowledge
from fedmed.tasks.vfl_clip.messages import AggregatedGradient
from fedmed.tasks.vfl_clip.roles import VflSetupError
from fedmed.wire import METRICS, SERVER_ROUND
from fedmed.wire.secagg import REPLY, from_record, request_content, round_content
from fedmed.wire.vfl import APPLY_ACTION, VFL_TEXT_PARTY
from strategies.secagg_channel import FlowerParties, Transport


def knowledge_label(index: int, count: int) -> str:
    """The byte-count label of knowledge provider ``index`` of ``count``."""
    return "knowledge" if count == 1 else f"knowledge-{index}"


@dataclass
class KnowledgeParties(FlowerParties):
    """:class:`fedmed.privacy.protocol.PartyChannel` to the knowledge providers."""

    actions = VFL_TEXT_PARTY
    party_noun = "knowledge providers"
    setup_error = VflSetupError

    server_round: int = 0

    def _label(self, party: int) -> str:
        return knowledge_label(party, len(self.nodes))

    def _exchange(
        self,
        step: str,
        contents: Mapping[int, RecordDict],
        kind: type[WireMessage] | None,
    ) -> dict[int, object]:
        parties = {self._label(p): p for p in contents}
        replies = self.transport.exchange(
            self.actions.action(step),
            {self._label(p): c for p, c in contents.items()},
            {label: self.nodes[p] for label, p in parties.items()},
        )
        if kind is None:
            return {parties[s]: r for s, r in replies.items()}
        return {parties[s]: from_record(kind, r[REPLY]) for s, r in replies.items()}

    def mask(
        self, starts: Mapping[int, RoundStart], job: object = None
    ) -> dict[int, MaskedInput]:
        config = {SERVER_ROUND: self.server_round}
        contents = {p: round_content(s, **config) for p, s in starts.items()}
        return self._exchange("mask", contents, MaskedInput)  # type: ignore[return-value]


@dataclass
class FlowerGradientSink:
    """Delivers the aggregated gradient to one knowledge provider's node."""

    transport: Transport
    label: str
    node: int

    def apply(self, aggregate: AggregatedGradient) -> dict[str, float]:
        replies = self.transport.exchange(
            APPLY_ACTION,
            {self.label: request_content(aggregate)},
            {self.label: self.node},
        )
        if self.label not in replies:
            raise RuntimeError(
                f"{self.label} failed to apply the aggregated gradient (see the log "
                "above); its context would fall behind the others', so the run stops"
            )
        return {k: float(v) for k, v in replies[self.label][METRICS].items()}


def secure_knowledge(
    cfg: VflClipConfig, transport: Transport, nodes: Mapping[int, int]
) -> tuple[SecureKnowledge, KnowledgeParties]:
    """Key setup among the knowledge providers (``{knowledge-id: node}``) and the
    :class:`SecureKnowledge` the protocol rounds talk to."""
    count = len(nodes)
    channel = KnowledgeParties(transport, dict(nodes))
    server = SecAggServer()
    run_setup(server, channel, sorted(nodes))
    sinks = [
        FlowerGradientSink(transport, knowledge_label(k, count), nodes[k])
        for k in sorted(nodes)
    ]
    return SecureKnowledge(server, channel, sinks, len(cfg.classes)), channel
