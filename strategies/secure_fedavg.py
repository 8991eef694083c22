"""FedAvg of adapter updates through secure aggregation: the server learns only sums.

With ``secure-aggregation = true`` the ServerApp runs this strategy instead
of :class:`AdapterFedAvg`. Each site masks ``[n_i w_i, n_i, (n_i m_i, n_i)
per declared metric]`` (:mod:`fedmed.privacy.weighted_sum`; the same layout
from every site, every round) with pairwise and self masks
(:mod:`fedmed.privacy`, protocol v2); the server adds the masked vectors,
removes the masks and divides, which gives exactly the example-weighted
FedAvg mean (up to the 64-bit fixed-point step). What the server learns per
round:

* the sums over the contributing sites of ``n_i w_i``, ``n_i`` and the
  weighted training metrics, hence the mean update, the total example count
  and the mean training metrics;
* which sites accepted their own update (a rejecting site gives a generic
  reason only), which failed, which dropped out;
* public keys, sealed seed shares it cannot open, masked vectors, and per
  round the seed shares of survivors and the round-bound pair keys of
  dropped sites (never both for one site and round);
* the sums of the sites' evaluation metrics (weighted) and statistics.

It never holds a site's update, example count or training metrics.

A run, as messages to the site actions of ``clients.secagg_site``:

0. key setup with every connected site, once per run (one round trip; the
   key directory rides on each site's first round);
1. ``train.secagg_fit`` to every site: the aggregate, the config and the
   round's mask request; each site trains, checks and bounds its update on
   the site and replies with the masked vector (zeros if it rejected it);
2. ``train.secagg_unmask``: survivors reveal, the server unmasks.

Fewer than ``min-sites`` accepted updates among the surviving inputs:
nothing is unmasked and the round is skipped. A site dropping out before
its masked input arrives leaves that round's sum (its neighbours reveal
their round-bound pair keys with it) and takes part again in the next
round; too many dropouts fail the round with
:class:`fedmed.privacy.RecoveryFailed` logged and the global model kept. A
sum claiming more than ``max-examples-per-site`` per contributor is refused
(a site cheated its own check). Each round is checkpointed and logged like
:class:`AdapterFedAvg`'s (bytes of every message counted). Evaluation is
summed securely too (``strategies.secure_evaluation``): the server learns
the example-weighted mean of each declared evaluation metric and the pooled
metrics computed from the summed statistics, never one site's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from logging import ERROR, INFO

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from fedmed.comm.selection import UpdateRejected
from fedmed.privacy import SecAggError, SecAggServer, SecureSum
from fedmed.privacy.messages import MaskedInput
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
    REJECTED,
    REPLY,
    SITE_PARTY,
    from_record,
    round_content,
)
from strategies.adapter_fedavg import AdapterFedAvg
from strategies.replies import record_silent, screen_replies
from strategies.secagg_channel import (
    SetupIncomplete,
    SiteParties,
    Transport,
    party_label,
)
from strategies.secure_evaluation import evaluate_messages, secure_evaluation


@dataclass(frozen=True)
class SiteFit:
    """A ``secagg_fit`` reply: the masked vector and whether the site accepted."""

    masked: MaskedInput
    accepted: bool


class SecureAdapterFedAvg(AdapterFedAvg):
    """Weighted FedAvg whose server sees only the secure sum of site updates.

    Client contract: the actions of ``clients.secagg_site`` (key setup,
    ``secagg_fit``, ``secagg_unmask``, ``secagg_evaluate``).
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
        if fraction_train < 1.0:
            raise ValueError(
                f"secure aggregation needs fraction_train = 1, found {fraction_train}:"
                " sums over different subsets of sites differ by single sites' inputs"
            )
        super().__init__(
            task, run, codec="fp32", min_sites=min_sites, round_offset=round_offset
        )
        self.value_range, self.timeout = value_range, timeout
        #: Setup and train rows list every site's bytes (no per-site metrics).
        self.secure_tally = RoundTally(list_every_site=True)
        self._secagg: SecAggServer | None = None
        self._channel: SiteParties | None = None

    def summary(self) -> None:
        log(INFO, "\t├── Secure aggregation: server learns only weighted sums")
        log(INFO, "\t├── Fixed-point range |n w| <= %g (64-bit ring)", self.value_range)
        super().summary()

    # ---------------------------------------------------------------- setup
    def _ensure_setup(
        self, grid: Grid, round_k: int
    ) -> tuple[SecAggServer, SiteParties]:
        """Key setup with the connected sites, once per run (one round trip)."""
        if self._secagg is not None and self._channel is not None:
            return self._secagg, self._channel
        started = time.perf_counter()
        nodes = self._wait_for_sites(grid)
        channel = SiteParties(Transport(grid, self.timeout, self.secure_tally), {})
        server = SecAggServer()
        ads = channel.discover(server.key_request(), nodes)
        if len(ads) < self.min_sites:
            raise SetupIncomplete(
                f"secure aggregation: {len(ads)} of {len(nodes)} connected sites "
                f"answered the key setup, fewer than min-sites={self.min_sites}; "
                "see the site errors above"
            )
        participants = run_setup(server, channel, sorted(ads))
        self._secagg, self._channel = server, channel
        log(INFO, "secure aggregation: key setup with sites %s", participants)
        self._record_secure(round_k - 1, "setup", started, parties=len(participants))
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
        """Open the round's secure sum at every site, with the aggregate to train."""
        round_k = self.round_of(server_round)
        server, channel = self._ensure_setup(grid, round_k)
        config[SERVER_ROUND] = round_k
        kind = f"train.{SITE_PARTY.action('fit')}"
        messages = []
        for party, start in server.open_round(secagg_round(round_k, "train")).items():
            content = round_content(start)
            content[ARRAYS], content[CONFIG] = arrays, config
            self.secure_tally.sent(str(party), payload_bytes(content))
            messages.append(
                Message(
                    content=content, dst_node_id=channel.nodes[party], message_type=kind
                )
            )
        self.reference = record_to_state(arrays)
        self.started = time.perf_counter()
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        round_k = self.round_of(server_round)
        fits = self._read_fits(round_k, replies)
        names = self.task.train_metric_names
        try:
            total = self._secure_sum(fits)
            if total is not None:
                self._check_weight(total, names)
        except (SecAggError, UpdateRejected) as err:
            log(ERROR, "round %d: secure aggregation failed: %s", round_k, err)
            self._record_secure(
                round_k, "train", self.started, status="failed", accepted=0
            )
            return None, None
        if total is None:
            log(
                ERROR,
                "round %d: fewer than min-sites %d accepted updates among the "
                "surviving inputs; nothing unmasked, global model unchanged",
                round_k,
                self.min_sites,
            )
            self._record_secure(
                round_k, "train", self.started, status="skipped", accepted=0
            )
            return None, None
        return self._release(round_k, total, fits, names)

    def _release(
        self,
        round_k: int,
        total: SecureSum,
        fits: dict[int, SiteFit],
        names: tuple[str, ...],
    ) -> tuple[ArrayRecord, MetricRecord]:
        """Checkpoint and record the mean read from the secure sum."""
        mean = mean_from_sum(total.values, self.reference, names)
        self.run.save_checkpoint(
            round_k, mean.state, {"codec": self.codec, "secure_aggregation": True}
        )
        metrics = {**mean.metrics, NUM_EXAMPLES: float(round(mean.num_examples))}
        accepted = [p for p in total.contributors if fits[p].accepted]
        self._record_secure(
            round_k,
            "train",
            self.started,
            metrics,
            status="ok",
            accepted=len(accepted),
            dropped=list(total.dropped),
        )
        return state_to_record(mean.state, self.codec), MetricRecord(metrics)

    def _read_fits(
        self, round_k: int, replies: Iterable[Message]
    ) -> dict[int, SiteFit]:
        """Every site's masked input; a rejecting site's input counts (zeros)."""
        channel = self._channel
        party_of = {n: str(p) for p, n in channel.nodes.items()}  # type: ignore[union-attr]
        fits = screen_replies(
            replies,
            read_fit,
            self.secure_tally,
            where=f"round {round_k}",
            site_of=lambda msg: party_label(party_of, msg),
        )
        record_silent(
            self.secure_tally,
            sorted(party_of.values()),
            (fit.site for fit in fits),
            where=f"round {round_k}",
            timeout_s=self.timeout,
        )
        for fit in fits:
            if not fit.value.accepted:
                log(ERROR, "round %d: site %s: %s", round_k, fit.site, REJECTED)
                self.secure_tally.reject(fit.site, REJECTED)
        return {int(fit.site): fit.value for fit in fits}

    def _secure_sum(self, fits: dict[int, SiteFit]) -> SecureSum | None:
        """Add, unmask; ``None`` if too few accepted updates would be summed."""
        server, channel = self._secagg, self._channel
        if server is None or channel is None:
            return None
        accepted = {p for p, fit in fits.items() if fit.accepted}
        if len(accepted) < self.min_sites:
            return None
        requests = server.route_masked_inputs([f.masked for f in fits.values()])
        if len(set(requests) & accepted) < self.min_sites:
            return None  # unmasking would reveal a sum over too few updates
        return server.unmask(list(channel.unmask(requests).values()))

    def _check_weight(self, total: SecureSum, names: tuple[str, ...]) -> None:
        """Refuse a sum whose example count exceeds the per-site cap allows."""
        size = sum(t.numel() for t in self.reference.values())
        cap = self.task.platform.max_examples_per_site * len(total.contributors)
        count = float(total.values[size])
        if not count <= cap:
            raise UpdateRejected(
                f"the summed example count {count:.4g} exceeds max-examples-per-site "
                f"x {len(total.contributors)} contributors = {cap}; a site claimed "
                "more than the cap (round refused)"
            )

    # ---------------------------------------------------------------- evaluate
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Open the round's secure evaluation sum at every site."""
        round_k = self.round_of(server_round)
        server, channel = self._ensure_setup(grid, round_k)
        config[SERVER_ROUND] = round_k
        starts = server.open_round(secagg_round(round_k, "evaluate"))
        self.started = time.perf_counter()
        return evaluate_messages(
            starts, channel.nodes, arrays, config, self.secure_tally
        )

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Weighted mean metrics and pooled metrics from the unmasked sum only."""
        round_k = self.round_of(server_round)
        try:
            aggregated = secure_evaluation(
                self.task,
                self._secagg,  # type: ignore[arg-type]  # set by configure_evaluate
                self._channel,  # type: ignore[arg-type]
                replies,
                min_sites=self.min_sites,
                where=f"round {round_k} evaluation",
                timeout=self.timeout,
            )
        except SecAggError as err:
            log(ERROR, "round %d: secure evaluation failed: %s", round_k, err)
            aggregated = {}
        contributors = aggregated.pop("contributors", 0)
        self._record_secure(
            round_k, "evaluate", self.started, aggregated, contributors=contributors
        )
        log(INFO, "round %d secure evaluation: %s", round_k, aggregated)
        if not aggregated:
            return None
        return MetricRecord({k: float(v) for k, v in aggregated.items()})

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


def secagg_round(round_k: int, phase: str) -> int:
    """The secure-aggregation round id of a run round's phase (strictly rising)."""
    return 2 * round_k + (phase == "evaluate")


def read_fit(content: RecordDict) -> SiteFit:
    """A ``secagg_fit`` reply: the masked input and whether the site accepted."""
    try:
        accepted = bool(int(content[METRICS][ACCEPTED]))
        masked = from_record(MaskedInput, content[REPLY])
    except KeyError as err:
        raise UpdateRejected(f"malformed secagg_fit reply: missing {err}") from None
    except SecAggError as err:
        raise UpdateRejected(f"malformed secagg_fit reply: {err}") from None
    return SiteFit(masked, accepted)
