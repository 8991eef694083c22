"""VFL-CLIP over Flower's Message API: the server's side of the vertical protocol.

The protocol steps are :mod:`fedmed.tasks.vfl_clip.protocol`'s
(:func:`train_round`, :func:`evaluate_round`) and :mod:`fedmed.privacy`'s
(:func:`run_setup`, :func:`secure_sum`); this module only carries their
messages to the nodes (actions of :mod:`clients.vfl_clip`), counts bytes and
writes the run directory. What each party sees:

* server: public keys, encrypted shares it cannot open, masked vectors,
  revealed shares of one round, and the unmasked *sums* (gradient, loss,
  count; pooled evaluation statistics); the context vectors and ``T``.
* knowledge provider: ``sum G_i``, ``sum loss_i``, ``sum N_i`` only.
* image provider: ``T`` and its own data; its private keys stay on the node.

Failure handling: a provider that errs or times out before sending its
masked input is dropped by secure aggregation (its pairwise masks are
recovered from the others' shares); it leaves the run for good, because its
mask key is then known. The round goes on while at least the Shamir
threshold (>= 2) of providers remain; below that the run stops with
:class:`fedmed.privacy.RecoveryFailed`. A failing knowledge provider stops
the run. Resuming restarts the knowledge provider from the last checkpointed
context; Adam's moments restart from zero (they are not checkpointed), and a
fresh key setup runs.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from logging import ERROR, INFO
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log
from torch import Tensor

from clients.vfl_clip import REPLY, REQUEST, ROLE_ACTION, TEXT, from_record, to_record
from fedmed.privacy import RecoveryFailed, SecAggServer
from fedmed.privacy.messages import (
    KeyAdvertisement,
    KeyDirectory,
    MaskedInput,
    MaskRequest,
    SetupShares,
    SetupSharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
    WireMessage,
)
from fedmed.privacy.protocol import run_setup
from fedmed.records import (
    ARRAYS,
    CONFIG,
    METRICS,
    SERVER_ROUND,
    payload_bytes,
    record_to_state,
    state_to_record,
)
from fedmed.runs import RunDirectory
from fedmed.tasks.vfl_clip.messages import AggregatedGradient, TextFeatures
from fedmed.tasks.vfl_clip.metrics import plot_confusion_matrix
from fedmed.tasks.vfl_clip.protocol import ProviderJob, evaluate_round, train_round
from fedmed.tasks.vfl_clip.roles import VflSetupError, check_image_providers
from fedmed.tasks.vfl_clip.task import VflClipTask

KNOWLEDGE = "knowledge"


@dataclass
class Tally:
    """Payload bytes per site since the last :meth:`take` (one metrics row)."""

    up: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    down: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failures: list[dict] = field(default_factory=list)

    def take(self) -> dict:
        sites = {
            s: {"bytes_up": self.up[s], "bytes_down": self.down[s]}
            for s in sorted(set(self.up) | set(self.down))
        }
        row = {
            "sites": sites,
            "bytes_up": sum(self.up.values()),
            "bytes_down": sum(self.down.values()),
            "rejected": self.failures,
        }
        self.up, self.down, self.failures = defaultdict(int), defaultdict(int), []
        return row

    def relabel(self, labels: Mapping[str, str]) -> None:
        """Rename sites counted before their names were known (node ids)."""
        for counts in (self.up, self.down):
            for old, new in labels.items():
                if old in counts:
                    counts[new] += counts.pop(old)


@dataclass
class Transport:
    """Round trips to named nodes, with byte counts; failed replies are left out."""

    grid: Grid
    timeout: float
    tally: Tally

    def exchange(
        self, action: str, contents: Mapping[str, RecordDict], nodes: Mapping[str, int]
    ) -> dict[str, RecordDict]:
        """Send ``contents[site]`` to ``nodes[site]`` as ``train.<action>``."""
        messages = []
        for site, content in contents.items():
            self.tally.down[site] += payload_bytes(content)
            kind = action if "." in action else f"train.{action}"
            messages.append(
                Message(content=content, dst_node_id=nodes[site], message_type=kind)
            )
        sites = {node: site for site, node in nodes.items()}
        replies = {}
        for reply in self.grid.send_and_receive(messages, timeout=self.timeout):
            site = sites[reply.metadata.src_node_id]
            if reply.has_error():
                log(ERROR, "%s: site %s failed:\n%s", action, site, reply.error.reason)
                reason = reply.error.reason.strip().splitlines()[-1][:300]
                self.tally.failures.append({"site": site, "reason": reason})
                continue
            self.tally.up[site] += payload_bytes(reply.content)
            replies[site] = reply.content
        failed = {f["site"] for f in self.tally.failures}
        for site in sorted(set(contents) - set(replies) - failed):
            log(
                ERROR, "%s: site %s sent no reply in %.0f s", action, site, self.timeout
            )
            self.tally.failures.append({"site": site, "reason": "no reply (timeout)"})
        return replies


def _request(message: WireMessage, **config: int | str) -> RecordDict:
    content = RecordDict({REQUEST: to_record(message)})
    if config:
        content[CONFIG] = ConfigRecord(dict(config))
    return content


@dataclass
class FlowerProviders:
    """:class:`fedmed.privacy.protocol.PartyChannel` over Flower messages."""

    transport: Transport
    nodes: dict[int, int]  # party (image-provider site) -> node id
    server_round: int = 0

    def _exchange(
        self,
        action: str,
        contents: Mapping[int, RecordDict],
        kind: type[WireMessage] | None,
    ) -> dict[int, Any]:
        nodes = {str(p): self.nodes[p] for p in contents}
        replies = self.transport.exchange(
            action, {str(p): c for p, c in contents.items()}, nodes
        )
        if kind is None:
            return {int(s): r for s, r in replies.items()}
        return {int(s): from_record(kind, r[REPLY]) for s, r in replies.items()}

    def advertise(self, parties: Sequence[int]) -> dict[int, KeyAdvertisement]:
        contents = {p: RecordDict() for p in parties}
        return self._exchange("vfl_keys", contents, KeyAdvertisement)

    def share(
        self, directory: KeyDirectory, parties: Sequence[int]
    ) -> dict[int, SetupShares]:
        contents = {p: _request(directory) for p in parties}
        return self._exchange("vfl_shares", contents, SetupShares)

    def deliver(self, deliveries: Mapping[int, SetupSharesDelivery]) -> None:
        contents = {p: _request(d) for p, d in deliveries.items()}
        ready = self._exchange("vfl_ready", contents, None)
        missing = sorted(set(deliveries) - set(ready))
        if missing:
            raise VflSetupError(
                f"image providers {missing} failed during the key setup; restart "
                "the run once they are reachable"
            )

    def mask(self, request: MaskRequest, job: ProviderJob) -> dict[int, MaskedInput]:
        config = {
            "phase": job.phase,
            "batch-seed": job.batch_seed,
            SERVER_ROUND: self.server_round,
        }
        contents = {}
        for party in request.active:
            contents[party] = _request(request, **config)
            contents[party][TEXT] = to_record(job.text)
        return self._exchange("vfl_mask", contents, MaskedInput)

    def unmask(
        self, requests: Mapping[int, UnmaskRequest]
    ) -> dict[int, UnmaskResponse]:
        contents = {p: _request(r) for p, r in requests.items()}
        return self._exchange("vfl_unmask", contents, UnmaskResponse)


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
            self._call("vfl_text", content)
        return self.text  # type: ignore[return-value]  # set by _call

    def apply(self, aggregate: AggregatedGradient) -> dict[str, float]:
        reply = self._call("vfl_apply", _request(aggregate))
        self.metrics = {k: float(v) for k, v in reply[METRICS].items()}
        return self.metrics


def discover_roles(
    transport: Transport, min_nodes: int, wait_s: float
) -> tuple[int, dict[int, int]]:
    """Ask every node its role: ``(knowledge node, {provider site: node})``.

    Waits (up to ``wait_s``) until ``min_nodes`` nodes are connected, then
    asks all connected nodes; a deployment sets ``min-sites`` to its number of
    nodes, the knowledge provider included.
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
    if transport.tally.failures:
        reasons = "; ".join(f["reason"] for f in transport.tally.failures)
        raise VflSetupError(f"nodes could not take a VFL-CLIP role: {reasons}")
    roles = {int(n): r[CONFIG] for n, r in replies.items()}
    knowledge = [n for n, c in roles.items() if c["role"] == "knowledge-provider"]
    providers = {int(c["site"]): n for n, c in roles.items() if int(c["site"]) >= 0}
    if len(knowledge) != 1:
        raise VflSetupError(
            f"VFL-CLIP needs exactly one knowledge provider, found {len(knowledge)} "
            f"among {len(nodes)} nodes (deployment: set role=knowledge-provider on "
            "one node's node config)"
        )
    if len(providers) != len(roles) - 1:
        raise VflSetupError(f"image providers share site ids: {roles}")
    check_image_providers(len(providers))
    labels = {str(n): str(site) for site, n in providers.items()}
    transport.tally.relabel({**labels, str(knowledge[0]): KNOWLEDGE})
    return knowledge[0], providers


@dataclass
class VerticalRun:
    """Runs VFL-CLIP rounds and writes them to the run directory."""

    task: VflClipTask
    run: RunDirectory
    transport: Transport
    seed: int = 0

    def start(
        self,
        first_round: int,
        last_round: int,
        resume_from: Mapping[str, Tensor] | None,
        min_nodes: int,
    ) -> None:
        """Key setup once, then rounds ``first_round..last_round``."""
        started = time.perf_counter()
        kp_node, nodes = discover_roles(
            self.transport, min_nodes, wait_s=self.transport.timeout
        )
        server = SecAggServer(threshold=self.task.cfg.secagg_threshold or None)
        providers = FlowerProviders(self.transport, nodes)
        run_setup(server, providers, sorted(nodes))
        self._record(first_round - 1, "setup", {"parties": len(nodes)}, started)
        log(INFO, "VFL-CLIP: %d image providers, key setup done", len(nodes))
        knowledge = FlowerKnowledge(self.transport, kp_node, resume_from)
        for round_id in range(first_round, last_round + 1):
            self._round(server, providers, knowledge, round_id, round_id == last_round)

    def _round(
        self,
        server: SecAggServer,
        providers: FlowerProviders,
        knowledge: FlowerKnowledge,
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
        self.run.save_checkpoint(
            round_id, knowledge.context, {"federation": "vertical"}
        )
        extra = {"accepted": len(total.contributors), "dropped": list(total.dropped)}
        self._record(round_id, "train", step, started, status="ok", **extra)
        started = time.perf_counter()
        metrics, confusion, total = evaluate_round(
            self.task.cfg,
            server,
            providers,
            knowledge.text_features(round_id),
            round_id,
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
        row = {"round": round_id, "phase": phase, "aggregated": dict(aggregated)}
        row.update(self.transport.tally.take())
        row.update(extra, wall_s=time.perf_counter() - started)
        self.run.append_metrics(row)


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
    transport = Transport(grid, timeout, Tally())
    VerticalRun(task, run, transport, seed).start(
        rounds[0], rounds[1], resume_from, min_nodes=min_sites
    )
