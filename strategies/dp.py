"""Central differential privacy for adapter updates: a wrapper around AdapterFedAvg.

A Flower ``DifferentialPrivacyServerSideFixedClipping`` wrapper (DP-FedAvg,
McMahan et al. 2018) whose release is fedmed's mechanism
(:func:`fedmed.privacy.dp.private_mean`): every valid site update
``w_i - w`` is clipped to L2 norm ``clip_norm`` on the server, the ``m``
clipped updates are averaged uniformly (one site moves the mean by at most
``clip_norm / m``, the sensitivity the noise is calibrated to), and Gaussian
noise of standard deviation ``noise_multiplier * clip_norm / m`` is added.

It composes with the wrapped :class:`AdapterFedAvg` through return values:
the inner strategy screens the replies (the task's ``validate_update``, so
a wrong shape never reaches the clipping), this wrapper combines them, and
the inner strategy releases the noised aggregate through its checkpoint and
metrics row. Nothing of the inner strategy or of the replies is modified.
The row's aggregated train metrics are uniform means (``num-examples``
counts the updates averaged); each site's own row keeps what it reported.

Epsilon is accounted per release with fedmed's RDP accountant
(:mod:`fedmed.privacy.accountant`; Flower's needs the optional
``dp-accounting`` package and plain FedAvg) and recorded as ``dp-epsilon``
in the round's train record, the returned train metrics and the
checkpoint's state file.

A site returning the model unchanged (a zero update) is averaged as it
is: clipping leaves a zero-norm update alone instead of dividing by its
norm (Flower's own clipping would), so the run continues.

Client contract: as :class:`AdapterFedAvg`; nothing extra (clipping is
server side). The wrapper needs comm-dtype fp32, as run configs do
(``fedmed.config.platform``: clipping quantised codes is meaningless and
fp16 rounds small noise away), and ``fraction-train = 1``.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO, WARNING

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping
from flwr.supercore import log

from fedmed.config import ConfigError
from fedmed.privacy.accountant import RdpAccountant
from fedmed.privacy.dp import CentralDP, private_mean
from fedmed.privacy.weighted_sum import require_mean_aggregation
from fedmed.tasks import Task
from strategies.adapter_fedavg import AdapterFedAvg
from strategies.replies import metric_means

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
        if strategy.codec != "fp32":
            raise ValueError(
                f"differential privacy needs comm-dtype fp32, found "
                f"{strategy.codec}: clipping quantised codes is meaningless and "
                "fp16 rounds small noise away; set comm-dtype=fp32"
            )
        if not 0.0 < delta < 1.0:
            raise ValueError(f"dp-delta must be in (0, 1), found {delta}")
        super().__init__(strategy, noise_multiplier, clip_norm, strategy.min_sites)
        self.inner = strategy
        self.delta = delta
        self.mechanism = CentralDP(noise_multiplier, clip_norm)  # fresh entropy
        self.noise = self.mechanism.generator()
        self.rdp = (
            RdpAccountant(noise_multiplier, sampling_rate) if noise_multiplier else None
        )
        if self.rdp is not None:
            self.rdp.step(rounds_done)
        if strategy.max_update_norm > 0:
            log(
                WARNING,
                "max-update-norm %.3g is not applied under differential privacy: "
                "dp-clip-norm %.3g bounds every update",
                strategy.max_update_norm,
                clip_norm,
            )
        if noise_multiplier < 0.5:
            log(
                WARNING,
                "dp-noise-multiplier %.3g gives little privacy",
                noise_multiplier,
            )

    def epsilon(self) -> float:
        """Epsilon spent so far at ``delta`` (``inf`` without noise)."""
        return self.rdp.epsilon(self.delta) if self.rdp is not None else float("inf")

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Clip, average uniformly, add noise; account and release the aggregate."""
        inner = self.inner
        round_k = inner.round_of(server_round)
        updates = inner.screen_train(round_k, replies)
        if len(updates) < inner.min_sites:
            return inner.skip_train(round_k, updates)
        aggregate = private_mean(
            [u.value.state for u in updates],
            inner.reference,
            self.mechanism,
            self.noise,
        )
        metrics = metric_means([u.value.metrics for u in updates], [1] * len(updates))
        if self.rdp is not None:
            self.rdp.step()
            metrics[EPSILON_KEY] = self.epsilon()
        epsilon = self.epsilon()
        log(
            INFO,
            "round %d: DP release of %d clipped updates, epsilon %.4g at delta %g",
            round_k,
            len(updates),
            epsilon,
            self.delta,
        )
        checkpoint = {
            "codec": inner.codec,
            "dp_epsilon": epsilon,
            "dp_delta": self.delta,
        }
        return inner.release_train(
            round_k, len(updates), aggregate, metrics, checkpoint
        )
