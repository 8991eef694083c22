"""FedAvg of adapter updates through secure aggregation: the server learns only sums.

With ``secure-aggregation = true`` the ServerApp runs this strategy instead
of :class:`AdapterFedAvg`. Each site masks ``[n_i w_i, n_i, n_i m_i, ...]``
(:mod:`fedmed.privacy.weighted_sum`) with pairwise and self masks
(:mod:`fedmed.privacy`); the server adds the masked vectors, removes the
masks and divides, which gives exactly the example-weighted FedAvg mean (up
to the 64-bit fixed-point step). What the server learns per round:

* the sums over the contributing sites of ``n_i w_i``, ``n_i`` and the
  weighted training metrics, hence the mean update, the total example count
  and the mean training metrics;
* which sites accepted their own update (with a rejecting site's reason),
  which failed, which dropped out;
* public keys, encrypted shares it cannot open and masked vectors;
* as in plain runs, each site's evaluation metrics of the *aggregate*.

It never holds a site's update, example count or training metrics.

A round, as messages to the site actions of ``clients.secagg_site``:

0. key setup with every connected site (``run_setup``): once per run, and
   again before a round that follows a dropout (the dropped site's mask key
   was revealed, so it can rejoin only with fresh keys);
1. ``train.secagg_fit`` to the sampled sites: train, check the update on the
   site (the server cannot once it is masked), reply accepted/rejected and
   the metric names;
2. ``train.secagg_mask`` to every site in the run with the vector layout;
   sites without an accepted update this round mask zeros;
3. ``train.secagg_unmask``: survivors reveal shares, the server unmasks.

Fewer than ``min-sites`` accepted updates among the masked inputs: nothing
is unmasked and the round is skipped. A site dropping out after the mask
request is survived while the Shamir threshold ``t`` of sites still answer
(the sum then covers the survivors and only their weights); beyond that the
round fails with :class:`fedmed.privacy.RecoveryFailed` logged, the global
model stays as it was and the next round re-keys. Each round is checkpointed
and logged like :class:`AdapterFedAvg`'s (bytes of every message counted);
evaluation is :class:`AdapterFedAvg`'s.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from logging import ERROR, INFO

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from fedmed.comm.selection import UpdateRejected
from fedmed.config import csv_list
from fedmed.privacy import SecAggError, SecAggServer, SecureSum
from fedmed.privacy.messages import KeyAdvertisement, MaskedInput, MaskRequest
from fedmed.privacy.protocol import run_setup
from fedmed.privacy.weighted_sum import mean_from_sum
from fedmed.runs import RoundTally, RunDirectory
from fedmed.tasks.base import Task
from fedmed.wire import (
    ARRAYS,
    CONFIG,
    METRICS,
    NUM_EXAMPLES,
    SERVER_ROUND,
    payload_bytes,
    record_to_state,
    state_to_record,
)
from fedmed.wire.secagg import (
    ACCEPTED,
    METRIC_NAMES,
    REASON,
    REPLY,
    SITE_PARTY,
    UPDATE_SIZE,
    from_record,
    request_content,
)
from strategies.adapter_fedavg import AdapterFedAvg
from strategies.replies import record_silent, screen_replies
from strategies.secagg_channel import FlowerParties, SetupIncomplete, Transport


@dataclass(frozen=True)
class MaskJob:
    """What every site masks in one round: the vector's layout."""

    server_round: int
    metric_names: tuple[str, ...]
    update_size: int


@dataclass
class SiteParties(FlowerParties):
    """The secure-aggregation channel to a horizontal run's sites (party = site id)."""

    actions = SITE_PARTY
    party_noun = "sites"

    ads: dict[int, KeyAdvertisement] = field(default_factory=dict)

    def discover(self, nodes: Sequence[int]) -> dict[int, KeyAdvertisement]:
        """Ask every node for fresh public keys; learn which site each node is."""
        labels = {f"node-{n}": n for n in nodes}
        replies = self.transport.exchange(
            self.actions.action("keys"), {k: RecordDict() for k in labels}, labels
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

    def advertise(self, parties: Sequence[int]) -> dict[int, KeyAdvertisement]:
        return {p: self.ads[p] for p in parties}

    def mask(self, request: MaskRequest, job: MaskJob) -> dict[int, MaskedInput]:
        config: dict[str, int | str] = {
            SERVER_ROUND: job.server_round,
            UPDATE_SIZE: job.update_size,
        }
        if job.metric_names:  # Flower cannot count the bytes of ""
            config[METRIC_NAMES] = ",".join(job.metric_names)
        contents = {p: request_content(request, **config) for p in request.active}
        return self._exchange("mask", contents, MaskedInput)


class SecureAdapterFedAvg(AdapterFedAvg):
    """Weighted FedAvg whose server sees only the secure sum of site updates.

    Client contract: the actions of ``clients.secagg_site`` (key setup,
    ``secagg_fit``, ``secagg_mask``, ``secagg_unmask``) and, for evaluation,
    :class:`AdapterFedAvg`'s.
    """

    def __init__(
        self,
        task: Task,
        run: RunDirectory,
        *,
        value_range: float,
        min_sites: int = 2,
        fraction_train: float = 1.0,
        round_offset: int = 0,
        timeout: float = 3600.0,
    ) -> None:
        if min_sites < 2:
            raise ValueError(
                f"secure aggregation needs min_sites >= 2 (a sum over one site is "
                f"its update), found {min_sites}"
            )
        super().__init__(
            task,
            run,
            codec="fp32",
            min_sites=min_sites,
            fraction_train=fraction_train,
            round_offset=round_offset,
        )
        self.value_range, self.timeout = value_range, timeout
        #: Setup and train rows list every site's bytes (no per-site metrics).
        self.secure_tally = RoundTally(list_every_site=True)
        self._secagg: SecAggServer | None = None
        self._channel: SiteParties | None = None
        self._participants: tuple[int, ...] = ()
        self._sampled: list[int] = []

    def summary(self) -> None:
        log(INFO, "\t├── Secure aggregation: server learns only weighted sums")
        log(INFO, "\t├── Fixed-point range |n w| <= %g (64-bit ring)", self.value_range)
        super().summary()

    # ---------------------------------------------------------------- setup
    def _ensure_setup(
        self, grid: Grid, round_k: int
    ) -> tuple[SecAggServer, SiteParties]:
        """Key setup with the connected sites, unless the current one still holds."""
        server, channel = self._secagg, self._channel
        if server and channel and len(server.active) == len(self._participants):
            return server, channel
        started = time.perf_counter()
        nodes = self._wait_for_sites(grid)
        channel = SiteParties(Transport(grid, self.timeout, self.secure_tally), {})
        ads = channel.discover(nodes)
        if len(ads) < self.min_sites:
            raise SetupIncomplete(
                f"secure aggregation: {len(ads)} of {len(nodes)} connected sites "
                f"answered the key setup, fewer than min-sites={self.min_sites}; "
                "see the site errors above"
            )
        server = SecAggServer()
        self._participants = run_setup(server, channel, sorted(ads))
        self._secagg, self._channel = server, channel
        log(INFO, "secure aggregation: key setup with sites %s", self._participants)
        self._record_secure(
            round_k - 1, "setup", started, parties=len(self._participants)
        )
        return server, channel

    def _wait_for_sites(self, grid: Grid) -> list[int]:
        """Connected nodes, waiting up to the round timeout for ``min_sites``."""
        deadline = time.monotonic() + self.timeout
        nodes = list(grid.get_node_ids())
        while len(nodes) < self.min_sites and time.monotonic() < deadline:
            time.sleep(1.0)
            nodes = list(grid.get_node_ids())
        if len(nodes) < self.min_sites:
            raise SetupIncomplete(
                f"secure aggregation needs at least min-sites={self.min_sites} sites "
                f"(a sum over one site is its update), found {len(nodes)} connected "
                f"after {self.timeout:.0f} s; start more sites"
            )
        return nodes

    # ---------------------------------------------------------------- train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        round_k = self.round_of(server_round)
        server, channel = self._ensure_setup(grid, round_k)
        active = list(server.active)
        size = max(int(len(active) * self.fraction_train), self.min_sites)
        self._sampled = sorted(random.sample(active, min(size, len(active))))
        config[SERVER_ROUND] = round_k
        content = RecordDict({ARRAYS: arrays, CONFIG: config})
        kind = f"train.{SITE_PARTY.action('fit')}"
        for party in self._sampled:
            self.secure_tally.sent(str(party), payload_bytes(content))
        self.reference = record_to_state(arrays)
        self.started = time.perf_counter()
        return [
            Message(content=content, dst_node_id=channel.nodes[p], message_type=kind)
            for p in self._sampled
        ]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        round_k = self.round_of(server_round)
        accepted, names = self._read_fits(round_k, replies)
        size = sum(t.numel() for t in self.reference.values())
        try:
            total = self._secure_sum(MaskJob(round_k, names, size), accepted)
        except SecAggError as err:
            log(ERROR, "round %d: secure aggregation failed: %s", round_k, err)
            self._record_secure(
                round_k, "train", self.started, status="failed", accepted=0
            )
            return None, None
        if total is None:
            log(
                ERROR,
                "round %d: fewer than min-sites %d accepted updates to sum; nothing "
                "unmasked, global model unchanged",
                round_k,
                self.min_sites,
            )
            self._record_secure(
                round_k, "train", self.started, status="skipped", accepted=0
            )
            return None, None
        mean = mean_from_sum(total.values, self.reference, names)
        self.run.save_checkpoint(
            round_k, mean.state, {"codec": self.codec, "secure_aggregation": True}
        )
        metrics = {**mean.metrics, NUM_EXAMPLES: float(round(mean.num_examples))}
        self._record_secure(
            round_k,
            "train",
            self.started,
            metrics,
            status="ok",
            accepted=len(set(accepted) & set(total.contributors)),
            dropped=list(total.dropped),
        )
        return state_to_record(mean.state, self.codec), MetricRecord(metrics)

    def _read_fits(
        self, round_k: int, replies: Iterable[Message]
    ) -> tuple[list[int], tuple[str, ...]]:
        """Sites that accepted their update, and the union of their metric names."""
        party_of = {n: str(p) for p, n in self._channel.nodes.items()}  # type: ignore[union-attr]
        fits = screen_replies(
            replies,
            read_fit,
            self.secure_tally,
            where=f"round {round_k}",
            site_of=lambda msg: party_of[msg.metadata.src_node_id],
        )
        record_silent(
            self.secure_tally,
            [str(p) for p in self._sampled],
            (fit.site for fit in fits),
            where=f"round {round_k}",
            timeout_s=self.timeout,
        )
        names = sorted({name for fit in fits for name in fit.value})
        return sorted(int(fit.site) for fit in fits), tuple(names)

    def _secure_sum(self, job: MaskJob, accepted: list[int]) -> SecureSum | None:
        """Mask, add, unmask; ``None`` if too few accepted updates would be summed."""
        server, channel = self._secagg, self._channel
        if server is None or channel is None or len(accepted) < self.min_sites:
            return None
        inputs = channel.mask(server.mask_request(job.server_round), job)
        requests = server.route_masked_inputs(list(inputs.values()))
        if len(set(inputs) & set(accepted)) < self.min_sites:
            return None  # unmasking would reveal a sum over too few updates
        return server.unmask(list(channel.unmask(requests).values()))

    def _record_secure(
        self,
        round_k: int,
        phase: str,
        started: float,
        aggregated: dict | None = None,
        **extra: object,
    ) -> None:
        wall_s = time.perf_counter() - started
        self.run.record_round(
            round_k, phase, aggregated or {}, self.secure_tally, wall_s=wall_s, **extra
        )


def read_fit(content: RecordDict) -> tuple[str, ...]:
    """A ``secagg_fit`` reply: the metric names of an update the site accepted.

    A site that rejected its own update (it checks what the server cannot
    see once masked) is refused here with the site's reason.
    """
    try:
        accepted = bool(int(content[METRICS][ACCEPTED]))
        text = content[CONFIG]
    except KeyError as err:
        raise UpdateRejected(f"malformed secagg_fit reply: {err}") from None
    if not accepted:
        raise UpdateRejected(str(text.get(REASON, "the site rejected its update")))
    return csv_list(str(text.get(METRIC_NAMES, "")))
