"""Central differential privacy for adapter updates: Flower's fixed-clipping wrapper.

Wraps :class:`AdapterFedAvg` in Flower's
``DifferentialPrivacyServerSideFixedClipping`` (DP-FedAvg, McMahan et al.
2018): every accepted site update ``w_i - w`` is clipped to L2 norm
``clip_norm`` on the server, the updates are averaged, and Gaussian noise of
standard deviation ``noise_multiplier * clip_norm / m`` is added to the
aggregate. What this wrapper adds to Flower's:

* malformed replies (keys, shapes, non-finite values) are screened out with
  the task's own ``validate_update`` before clipping, which would otherwise
  fail on a wrong shape; ``m`` is the number of updates actually averaged;
* sites are weighted uniformly (one site changes the mean by at most
  ``clip_norm / m``, the sensitivity the noise is calibrated to);
* the round's checkpoint is rewritten with the noised aggregate, so a resumed
  run continues from what the sites received;
* epsilon is accounted per release with fedmed's RDP accountant (Flower's
  needs the optional ``dp-accounting`` package and plain FedAvg) and recorded
  as ``dp-epsilon`` in the round's train record (``metrics.jsonl``), the
  returned train metrics and the checkpoint's state file.

Client contract: as :class:`AdapterFedAvg`; nothing extra (clipping is
server side). The wrapper refuses int8 (clipping codes is meaningless);
run configs further require fp32 and ``fraction-train = 1``
(``fedmed.config.platform``).
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO, WARNING

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping
from flwr.supercore import log

from fedmed.comm.selection import UpdateRejected
from fedmed.config import ConfigError
from fedmed.privacy.accountant import RdpAccountant, epsilon_after
from fedmed.privacy.weighted_sum import require_mean_aggregation
from fedmed.tasks import Task
from fedmed.wire import ARRAYS, METRICS, NUM_EXAMPLES, record_to_state
from strategies.adapter_fedavg import AdapterFedAvg

EPSILON_KEY = "dp-epsilon"


def check_differential_privacy(task: Task) -> None:
    """Refuse (``ConfigError``) a task central DP-FedAvg cannot protect.

    Clipping ``w_i - w`` needs updates shaped like the global model, and the
    noise is calibrated to a mean's sensitivity ``clip / m``; a vertical task
    exchanges no model update at all.
    """
    if task.federation != "horizontal":
        raise ConfigError(
            f"differential-privacy=true: task {task.name!r} is {task.federation}; "
            "central DP clips and noises model updates of horizontal tasks "
            "(classify, fpt, samba)"
        )
    require_mean_aggregation(
        task,
        "differential-privacy=true",
        "clipping needs each update w_i - w in the model's shapes and the noise "
        "is calibrated to the sensitivity of a mean",
    )


class AdapterDPFixedClipping(DifferentialPrivacyServerSideFixedClipping):
    """Server-side fixed clipping + Gaussian noise around :class:`AdapterFedAvg`."""

    def __init__(
        self,
        strategy: AdapterFedAvg,
        *,
        noise_multiplier: float,
        clip_norm: float,
        delta: float = 1e-5,
        sampling_rate: float = 1.0,
        rounds_done: int = 0,
    ) -> None:
        if strategy.codec == "int8":
            raise ValueError(
                "differential privacy needs comm-dtype fp32 or fp16, found int8: "
                "clipping quantised codes is meaningless; set comm-dtype=fp32"
            )
        if not 0.0 < delta < 1.0:
            raise ValueError(f"dp-delta must be in (0, 1), found {delta}")
        super().__init__(strategy, noise_multiplier, clip_norm, strategy.min_sites)
        # only the noised aggregate may reach disk (a resume sends it to sites)
        strategy.save_checkpoints = False
        self.delta = delta
        self.rdp = (
            RdpAccountant(noise_multiplier, sampling_rate) if noise_multiplier else None
        )
        if self.rdp is not None:
            self.rdp.step(rounds_done)
        if noise_multiplier < 0.5:
            log(
                WARNING,
                "dp-noise-multiplier %.3g gives little privacy",
                noise_multiplier,
            )

    def epsilon(self) -> float:
        """Epsilon spent so far at ``delta`` (``inf`` without noise)."""
        return self.rdp.epsilon(self.delta) if self.rdp is not None else float("inf")

    def _epsilon_after(self, releases: int) -> float:
        """Epsilon once ``releases`` more rounds are released."""
        return epsilon_after(
            self.rdp.noise_multiplier,
            self.rdp.rounds + releases,
            self.delta,
            self.rdp.sampling_rate,
        )

    def _screen(self, server_round: int, replies: list[Message]) -> list[Message]:
        """Replies that can be clipped: no error, valid update; uniform weights."""
        inner: AdapterFedAvg = self.strategy
        reference = record_to_state(self.current_arrays)
        kept = []
        for msg in replies:
            if not msg.has_error():
                try:
                    inner.task.validate_update(
                        record_to_state(msg.content[ARRAYS]), reference
                    )
                    msg.content[METRICS][NUM_EXAMPLES] = 1.0
                except (UpdateRejected, ValueError, KeyError) as err:
                    log(
                        WARNING,
                        "round %d: DP screen drops an update: %s",
                        server_round,
                        err,
                    )
                    continue
            kept.append(msg)
        return kept

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Clip, average uniformly, add noise; checkpoint the noised aggregate."""
        replies = self._screen(server_round, list(replies))
        valid = [m for m in replies if not m.has_error()]
        if not valid:
            return self.strategy.aggregate_train(server_round, replies)
        self.num_sampled_clients = len(valid)
        inner: AdapterFedAvg = self.strategy
        if self.rdp is not None:  # what epsilon will be once this round is released
            inner.extra_train_metrics = {EPSILON_KEY: self._epsilon_after(1)}
        try:
            arrays, metrics = super().aggregate_train(server_round, valid)
        finally:
            inner.extra_train_metrics = {}
        if arrays is None:
            return arrays, metrics
        if self.rdp is not None:
            self.rdp.step()
        round_k = server_round + inner.round_offset
        epsilon = self.epsilon()
        inner.run.save_checkpoint(
            round_k,
            record_to_state(arrays),
            {"codec": inner.codec, "dp_epsilon": epsilon, "dp_delta": self.delta},
        )
        log(
            INFO,
            "round %d: DP release, epsilon %.4g at delta %g",
            round_k,
            epsilon,
            self.delta,
        )
        metrics = MetricRecord(
            {**(dict(metrics) if metrics else {}), EPSILON_KEY: epsilon}
        )
        return arrays, metrics
