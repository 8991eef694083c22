"""The VFL-CLIP protocol steps, shared by the in-process driver and Flower.

:func:`train_round` and :func:`evaluate_round` are the protocol: they talk to
the image providers through a :class:`fedmed.privacy.protocol.PartyChannel`
(secure aggregation) and to the knowledge provider through a
:class:`KnowledgeChannel`. :func:`run_vfl_inprocess` wires both to objects in
this process (every message may pass through its byte form to show that the
roles share nothing but messages; tests, benchmarks, demos), and
``strategies.vfl_clip`` wires them to Flower messages.

Per training round ``r``: the knowledge provider publishes ``T``; every image
provider masks ``[G_i, loss_i, N_i]``; the server unmasks only the sum and
hands it to the knowledge provider, which takes one Adam step on
``sum G_i / sum N_i``. Evaluation: image providers mask their statistics
vectors; the server unmasks the pooled statistics and computes AUC/ACC.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from fedmed.privacy import FixedPointCodec, SecAggServer, SecureSum
from fedmed.privacy.party import SecAggParty
from fedmed.privacy.protocol import (
    InProcessChannel,
    PartyChannel,
    Traffic,
    run_setup,
    secure_sum,
    send,
)
from fedmed.tasks.vfl_clip.config import VflClipConfig
from fedmed.tasks.vfl_clip.knowledge import inprocess_knowledge
from fedmed.tasks.vfl_clip.messages import (
    AggregatedGradient,
    TextFeatures,
    secagg_round_id,
)
from fedmed.tasks.vfl_clip.metrics import metrics_from_statistics, split_statistics
from fedmed.tasks.vfl_clip.roles import (
    ImageProvider,
    KnowledgeProvider,
    check_image_providers,
)
from fedmed.tasks.vfl_clip.train import batch_seed

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ProviderJob:
    """What every image provider computes and masks in one secure sum."""

    phase: Literal["train", "evaluate"]
    text: TextFeatures
    batch_seed: int = 0


@dataclass
class VflHistory:
    """What an in-process VFL run produced."""

    train_loss: list[float] = field(default_factory=list)
    evaluations: list[dict[str, float]] = field(default_factory=list)
    confusion: np.ndarray | None = None
    contributors: list[tuple[int, ...]] = field(default_factory=list)


class KnowledgeChannel(Protocol):
    """How the server reaches the knowledge provider."""

    def text_features(self, round_id: int) -> TextFeatures: ...

    def apply(self, aggregate: AggregatedGradient) -> dict[str, float]: ...


def secagg_codec(cfg: VflClipConfig, num_providers: int) -> FixedPointCodec:
    """The fixed-point codec every image provider uses for its vectors."""
    return FixedPointCodec(cfg.secagg_bits, cfg.secagg_range, num_providers)


def provider_vector(
    provider: ImageProvider, cfg: VflClipConfig, job: ProviderJob
) -> np.ndarray:
    """The vector an image provider masks: ``[G_i, loss_i, N_i]`` or statistics."""
    if job.phase == "train":
        return provider.gradient_vector(job.text, cfg.batch_size, job.batch_seed)
    return provider.statistics_vector(job.text, cfg)


def train_round(
    server: SecAggServer,
    providers: PartyChannel,
    knowledge: KnowledgeChannel,
    round_id: int,
    seed: int = 0,
) -> tuple[dict[str, float], SecureSum]:
    """One training round: ``T`` out, secure ``sum [G_i, loss_i, N_i]`` in, Adam."""
    text = knowledge.text_features(round_id)
    job = ProviderJob("train", text, batch_seed(seed, round_id))
    total = secure_sum(server, providers, secagg_round_id(round_id, "train"), job)
    num_classes, dim = text.features.shape
    aggregate = AggregatedGradient.from_sum(round_id, total.values, num_classes, dim)
    return knowledge.apply(aggregate), total


def evaluate_round(
    cfg: VflClipConfig,
    server: SecAggServer,
    providers: PartyChannel,
    text: TextFeatures,
    round_id: int,
) -> tuple[dict[str, float], np.ndarray, SecureSum]:
    """Pooled test metrics from securely summed statistics, and the confusion."""
    job = ProviderJob("evaluate", text)
    total = secure_sum(server, providers, secagg_round_id(round_id, "evaluate"), job)
    num_classes = text.features.shape[0]
    metrics = metrics_from_statistics(total.values, num_classes, cfg.auc_bins)
    confusion, _ = split_statistics(total.values, num_classes, cfg.auc_bins)
    return metrics, confusion, total


@dataclass
class InProcessKnowledge:
    """:class:`KnowledgeChannel` to a knowledge provider in this process."""

    provider: KnowledgeProvider
    through_bytes: bool = True
    traffic: Traffic | None = None

    def text_features(self, round_id: int) -> TextFeatures:
        message = self.provider.text_features(round_id)
        return send(message, self.through_bytes, self.traffic)

    def apply(self, aggregate: AggregatedGradient) -> dict[str, float]:
        return self.provider.apply(send(aggregate, self.through_bytes, self.traffic))


def inprocess_providers(
    cfg: VflClipConfig,
    providers: Sequence[ImageProvider],
    through_bytes: bool = True,
    traffic: Traffic | None = None,
) -> tuple[SecAggServer, InProcessChannel]:
    """Key setup (one round trip) between in-process image providers and a server.

    ``vfl-clip.secagg-threshold`` (0 = default ``ceil(2k/3)``) is the Shamir
    threshold among each provider's ``k`` neighbours; providers refuse a
    value below their floor of two thirds.
    """
    check_image_providers(len(providers))
    by_id = {p.site_id: p for p in providers}
    if len(by_id) != len(providers):
        raise ValueError(
            f"image providers need distinct site ids, found "
            f"{[p.site_id for p in providers]}"
        )
    channel = InProcessChannel(
        {pid: SecAggParty(pid) for pid in by_id},
        lambda pid, job: provider_vector(by_id[pid], cfg, job),
        secagg_codec(cfg, len(providers)),
        through_bytes,
        traffic,
    )
    server = SecAggServer(threshold=cfg.secagg_threshold or None)
    run_setup(server, channel, list(by_id))
    return server, channel


def inprocess_knowledge_channel(
    cfg: VflClipConfig,
    knowledge: KnowledgeProvider | Sequence[KnowledgeProvider],
    through_bytes: bool = True,
    traffic: Traffic | None = None,
) -> KnowledgeChannel:
    """One knowledge provider directly; several through the secure text mean."""
    if isinstance(knowledge, KnowledgeProvider):
        return InProcessKnowledge(knowledge, through_bytes, traffic)
    if len(knowledge) == 1:
        return InProcessKnowledge(knowledge[0], through_bytes, traffic)
    return inprocess_knowledge(cfg, knowledge, through_bytes, traffic)


def run_vfl_inprocess(
    cfg: VflClipConfig,
    knowledge: KnowledgeProvider | Sequence[KnowledgeProvider],
    providers: Sequence[ImageProvider],
    rounds: int,
    *,
    evaluate_every: int = 0,
    seed: int = 0,
    through_bytes: bool = True,
    dropouts: Mapping[int, Collection[int]] | None = None,
    traffic: Traffic | None = None,
) -> VflHistory:
    """Train the CoOp context for ``rounds`` rounds across the vertical split.

    ``knowledge`` is one knowledge provider or several (their text features
    are then averaged by a secure sum, :mod:`fedmed.tasks.vfl_clip.knowledge`).

    ``dropouts`` maps a round to image-provider ids that vanish after masking
    in that round's training sum (their data leave that sum; the round goes on
    if every remaining provider keeps ``t`` neighbours, and they take part
    again from the next secure sum on). The final round is always evaluated.
    """
    server, channel = inprocess_providers(cfg, providers, through_bytes, traffic)
    kp = inprocess_knowledge_channel(cfg, knowledge, through_bytes, traffic)
    history = VflHistory()
    for round_id in range(1, rounds + 1):
        channel.drop_before_masking = (dropouts or {}).get(round_id, ())
        step, total = train_round(server, channel, kp, round_id, seed)
        channel.drop_before_masking = ()
        history.train_loss.append(step["train_loss"])
        history.contributors.append(total.contributors)
        if round_id == rounds or (evaluate_every and round_id % evaluate_every == 0):
            text = kp.text_features(round_id)
            metrics, history.confusion, _ = evaluate_round(
                cfg, server, channel, text, round_id
            )
            history.evaluations.append({"round": float(round_id), **metrics})
            logger.info(
                "round %d: loss %.4f, %s", round_id, step["train_loss"], metrics
            )
    return history
