"""VFL-CLIP over Flower's Message API: the server's side of the vertical protocol.

The protocol steps are :mod:`fedmed.tasks.vfl_clip.protocol`'s
(:func:`train_round`, :func:`evaluate_round`) and :mod:`fedmed.privacy`'s
(:func:`run_setup`, :func:`secure_sum`); this module only carries their
messages to the nodes (actions of :mod:`fedmed.wire.vfl`), counts bytes and
writes the run directory. What each party sees:

* server: public keys, sealed seed shares it cannot open, masked vectors,
  per round the seed shares of survivors and the round-bound pair keys of
  dropped providers, and the unmasked *sums* (gradient, loss, count; pooled
  evaluation statistics); the context vectors and ``T``.
  With several knowledge providers (``vfl-clip.knowledge-providers = K``,
  :mod:`strategies.vfl_knowledge`) the server sees masked ``[T_k, s_k]`` and
  their mean only, never a provider's ``T_k`` or context, and checkpoints
  that mean.
* knowledge provider: ``sum G_i``, ``sum loss_i``, ``sum N_i`` only.
* image provider: ``T`` and its own data; its private keys stay on the node.

Failure handling: a provider that errs or times out before sending its
masked input is dropped from that secure sum (its neighbours reveal their
pair keys with it for that round only) and takes part again in the next
one. The round goes on while every remaining provider keeps ``t`` surviving
neighbours; below that the run stops with
:class:`fedmed.privacy.RecoveryFailed`. A failing knowledge provider stops
the run. Resuming restarts the knowledge provider from the last checkpointed
context; Adam's moments restart from zero (they are not checkpointed), and a
fresh key setup runs. With several knowledge providers the contexts live
only in their nodes' per-run state, so such a run cannot be resumed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from logging import INFO

from flwr.app import ConfigRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log
from torch import Tensor

from fedmed.privacy import RecoveryFailed, RoundStart, SecAggServer
from fedmed.privacy.messages import MaskedInput
from fedmed.privacy.protocol import run_setup
from fedmed.runs import RoundTally, RunDirectory
from fedmed.tasks.vfl_clip.knowledge import SecureKnowledge, published_state
from fedmed.tasks.vfl_clip.messages import AggregatedGradient, TextFeatures
from fedmed.tasks.vfl_clip.metrics import plot_confusion_matrix
from fedmed.tasks.vfl_clip.protocol import (
    KnowledgeChannel,
    ProviderJob,
    evaluate_round,
    train_round,
)
from fedmed.tasks.vfl_clip.roles import VflSetupError, check_image_providers
from fedmed.tasks.vfl_clip.task import VflClipTask
from fedmed.wire import (
    ARRAYS,
    CONFIG,
    METRICS,
    SERVER_ROUND,
    record_to_state,
    state_to_record,
)
from fedmed.wire.secagg import from_record, request_content, round_content, to_record
from fedmed.wire.vfl import (
    APPLY_ACTION,
    BATCH_SEED,
    KNOWLEDGE_ID,
    PHASE,
    ROLE,
    ROLE_ACTION,
    SITE,
    TEXT,
    TEXT_ACTION,
    VFL_PARTY,
)
from strategies.secagg_channel import FlowerParties, Transport
from strategies.vfl_knowledge import KnowledgeParties, knowledge_label, secure_knowledge

KNOWLEDGE = knowledge_label(0, 1)


@dataclass
class FlowerProviders(FlowerParties):
    """:class:`fedmed.privacy.protocol.PartyChannel` to the image providers."""

    actions = VFL_PARTY
    party_noun = "image providers"
    setup_error = VflSetupError

    server_round: int = 0

    def mask(
        self, starts: Mapping[int, RoundStart], job: ProviderJob
    ) -> dict[int, MaskedInput]:
        config = {
            PHASE: job.phase,
            BATCH_SEED: job.batch_seed,
            SERVER_ROUND: self.server_round,
        }
        contents = {}
        for party, start in starts.items():
            contents[party] = round_content(start, **config)
            contents[party][TEXT] = to_record(job.text)
        return self._exchange("mask", contents, MaskedInput)


@dataclass
class FlowerKnowledge:
    """:class:`fedmed.tasks.vfl_clip.protocol.KnowledgeChannel` over Flower."""

    transport: Transport
    node: int
    resume_from: Mapping[str, Tensor] | None = None
    text: TextFeatures | None = None
    context: dict[str, Tensor] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def _call(self, action: str, content: RecordDict) -> RecordDict:
        replies = self.transport.exchange(
            action, {KNOWLEDGE: content}, {KNOWLEDGE: self.node}
        )
        if KNOWLEDGE not in replies:
            raise RuntimeError(
                f"the knowledge provider failed on {action} (see the log above); "
                "VFL-CLIP cannot go on without it"
            )
        reply = replies[KNOWLEDGE]
        self.text = from_record(TextFeatures, reply[TEXT])
        self.context = record_to_state(reply[ARRAYS])
        return reply

    def text_features(self, round_id: int) -> TextFeatures:
        if self.text is None:
            content = RecordDict({CONFIG: ConfigRecord({SERVER_ROUND: round_id})})
            if self.resume_from is not None:
                content[ARRAYS] = state_to_record(self.resume_from, "fp32")
            self._call(TEXT_ACTION, content)
        return self.text  # type: ignore[return-value]  # set by _call

    def apply(self, aggregate: AggregatedGradient) -> dict[str, float]:
        reply = self._call(APPLY_ACTION, request_content(aggregate))
        self.metrics = {k: float(v) for k, v in reply[METRICS].items()}
        return self.metrics


def discover_roles(
    transport: Transport, min_nodes: int, wait_s: float, knowledge_count: int = 1
) -> tuple[dict[int, int], dict[int, int]]:
    """Ask every node its role: ``({knowledge-id: node}, {provider site: node})``.

    Waits (up to ``wait_s``) until ``min_nodes`` nodes are connected, then
    asks all connected nodes; a deployment sets ``min-sites`` to its number of
    nodes, the knowledge providers included.
    """
    grid = transport.grid
    deadline = time.monotonic() + wait_s
    nodes = list(grid.get_node_ids())
    while len(nodes) < min_nodes and time.monotonic() < deadline:
        time.sleep(1.0)
        nodes = list(grid.get_node_ids())
    replies = transport.exchange(
        f"query.{ROLE_ACTION}",
        {str(n): RecordDict() for n in nodes},
        {str(n): n for n in nodes},
    )
    if transport.tally.rejected:
        reasons = "; ".join(f["reason"] for f in transport.tally.rejected)
        raise VflSetupError(f"nodes could not take a VFL-CLIP role: {reasons}")
    roles = {int(n): r[CONFIG] for n, r in replies.items()}
    knowledge = _knowledge_nodes(roles, knowledge_count)
    providers = {int(c[SITE]): n for n, c in roles.items() if int(c[SITE]) >= 0}
    if len(providers) != len(roles) - len(knowledge):
        raise VflSetupError(f"image providers share site ids: {roles}")
    check_image_providers(len(providers))
    labels = {str(n): str(site) for site, n in providers.items()}
    for index, node in knowledge.items():
        labels[str(node)] = knowledge_label(index, knowledge_count)
    transport.tally.relabel(labels)
    return knowledge, providers


def _knowledge_nodes(roles: Mapping[int, ConfigRecord], count: int) -> dict[int, int]:
    """``{knowledge-id: node}``: exactly ids ``0..count-1``, one node each."""
    found = [
        (int(c.get(KNOWLEDGE_ID, 0)), n)
        for n, c in roles.items()
        if c[ROLE] == "knowledge-provider"
    ]
    knowledge = dict(found)
    if len(found) != count or sorted(knowledge) != list(range(count)):
        raise VflSetupError(
            f"VFL-CLIP needs vfl-clip.knowledge-providers = {count} knowledge "
            f"providers with knowledge-id 0..{count - 1}, found ids "
            f"{sorted(k for k, _ in found)} among {len(roles)} nodes (deployment: "
            "set role=knowledge-provider and a distinct knowledge-id in those "
            "nodes' node config)"
        )
    return knowledge


@dataclass
class VerticalRun:
    """Runs VFL-CLIP rounds and writes them to the run directory."""

    task: VflClipTask
    run: RunDirectory
    transport: Transport
    seed: int = 0
    _text_parties: KnowledgeParties | None = field(default=None, init=False)

    def start(
        self,
        first_round: int,
        last_round: int,
        resume_from: Mapping[str, Tensor] | None,
        min_nodes: int,
    ) -> None:
        """Key setup once (one round trip), then rounds ``first_round..last_round``.

        The key directory rides on each provider's first mask request.
        """
        count = self.task.cfg.knowledge_providers
        if count > 1 and resume_from is not None:
            raise VflSetupError(
                f"a run with {count} knowledge providers cannot be resumed: their "
                "contexts and Adam states lived only in the nodes' state of the "
                "interrupted run, and the server holds their mean text features "
                "only; start a new run (a fresh --out folder)"
            )
        started = time.perf_counter()
        kp_nodes, nodes = discover_roles(
            self.transport,
            min_nodes,
            wait_s=self.transport.timeout,
            knowledge_count=count,
        )
        server = SecAggServer(threshold=self.task.cfg.secagg_threshold or None)
        providers = FlowerProviders(self.transport, nodes)
        run_setup(server, providers, sorted(nodes))
        knowledge = self._knowledge(kp_nodes, resume_from)
        self._record(first_round - 1, "setup", {"parties": len(nodes)}, started)
        log(INFO, "VFL-CLIP: %d image providers, key setup done", len(nodes))
        for round_id in range(first_round, last_round + 1):
            if isinstance(self._text_parties, KnowledgeParties):
                self._text_parties.server_round = round_id
            self._round(server, providers, knowledge, round_id, round_id == last_round)

    def _knowledge(
        self, nodes: Mapping[int, int], resume_from: Mapping[str, Tensor] | None
    ) -> KnowledgeChannel:
        """One knowledge provider directly; several through a secure text mean."""
        if len(nodes) == 1:
            return FlowerKnowledge(self.transport, nodes[0], resume_from)
        knowledge, self._text_parties = secure_knowledge(
            self.task.cfg, self.transport, nodes
        )
        return knowledge

    def _round(
        self,
        server: SecAggServer,
        providers: FlowerProviders,
        knowledge: KnowledgeChannel,
        round_id: int,
        last: bool,
    ) -> None:
        started = time.perf_counter()
        providers.server_round = round_id
        try:
            step, total = train_round(server, providers, knowledge, round_id, self.seed)
        except RecoveryFailed as err:
            raise RecoveryFailed(
                f"VFL-CLIP round {round_id}: too few image providers answered to "
                f"recover the secure sum ({err})"
            ) from err
        text = knowledge.text_features(round_id)  # K >= 2: a fresh secure mean
        self.run.save_checkpoint(
            round_id, checkpoint_state(knowledge, text), {"federation": "vertical"}
        )
        extra = {"accepted": len(total.contributors), "dropped": list(total.dropped)}
        self._record(round_id, "train", step, started, status="ok", **extra)
        started = time.perf_counter()
        metrics, confusion, total = evaluate_round(
            self.task.cfg, server, providers, text, round_id
        )
        pooled = {f"pooled_{k}": v for k, v in metrics.items()}
        self._record(
            round_id, "evaluate", pooled, started, contributors=len(total.contributors)
        )
        log(INFO, "round %d: loss %.4f, %s", round_id, step["train_loss"], pooled)
        if last:
            plot_confusion_matrix(
                confusion,
                self.task.cfg.classes,
                self.run.plots / "confusion_matrix.png",
                f"VFL-CLIP pooled test confusion, round {round_id}",
            )

    def _record(
        self,
        round_id: int,
        phase: str,
        aggregated: Mapping[str, float],
        started: float,
        **extra: object,
    ) -> None:
        wall_s = time.perf_counter() - started
        self.run.record_round(
            round_id, phase, aggregated, self.transport.tally, wall_s=wall_s, **extra
        )


def checkpoint_state(
    knowledge: KnowledgeChannel, text: TextFeatures
) -> Mapping[str, Tensor]:
    """The round's checkpoint: the context of a single knowledge provider, or
    the mean text features of several (the server never holds their contexts)."""
    if isinstance(knowledge, SecureKnowledge):
        return published_state(text)
    if not isinstance(knowledge, FlowerKnowledge):
        raise TypeError(f"no checkpoint for knowledge channel {knowledge!r}")
    return knowledge.context


def run_vertical(
    grid: Grid,
    task: VflClipTask,
    run: RunDirectory,
    *,
    rounds: tuple[int, int],
    resume_from: Mapping[str, Tensor] | None,
    min_sites: int,
    timeout: float,
    seed: int = 0,
) -> None:
    """Entry point of the ServerApp for ``federation = "vertical"`` tasks."""
    transport = Transport(grid, timeout, RoundTally(list_every_site=True))
    VerticalRun(task, run, transport, seed).start(
        rounds[0], rounds[1], resume_from, min_nodes=min_sites
    )
