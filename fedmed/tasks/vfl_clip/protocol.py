"""The VFL-CLIP protocol run in one process, secure aggregation included.

The same message sequence a Flower deployment runs (see
:mod:`fedmed.tasks.vfl_clip.messages`), with direct calls instead of the
network: every message may be passed through its byte form to show that the
roles share nothing but messages. Used by tests, benchmarks and demos.

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
from typing import TypeVar

import numpy as np

from fedmed.privacy import FixedPointCodec, SecAggParty, SecAggServer
from fedmed.privacy.messages import WireMessage
from fedmed.privacy.protocol import Traffic, secure_sum_inprocess, setup_inprocess
from fedmed.tasks.vfl_clip.config import VflClipConfig
from fedmed.tasks.vfl_clip.messages import TextFeatures, secagg_round_id
from fedmed.tasks.vfl_clip.metrics import metrics_from_statistics, split_statistics
from fedmed.tasks.vfl_clip.roles import (
    ImageProvider,
    KnowledgeProvider,
    check_image_providers,
)

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=WireMessage)


@dataclass
class VflHistory:
    """What an in-process VFL run produced."""

    train_loss: list[float] = field(default_factory=list)
    evaluations: list[dict[str, float]] = field(default_factory=list)
    confusion: np.ndarray | None = None
    contributors: list[tuple[int, ...]] = field(default_factory=list)


def _wire(message: M, through_bytes: bool, traffic: Traffic | None) -> M:
    if traffic is not None:
        traffic.record(message)
    return type(message).from_bytes(message.to_bytes()) if through_bytes else message


def secagg_codec(cfg: VflClipConfig, num_providers: int) -> FixedPointCodec:
    """The fixed-point codec every image provider uses for its vectors."""
    return FixedPointCodec(cfg.secagg_bits, cfg.secagg_range, num_providers)


def evaluate_secure(
    cfg: VflClipConfig,
    text: TextFeatures,
    providers: Sequence[ImageProvider],
    secagg: tuple[SecAggServer, Mapping[int, SecAggParty]],
    round_id: int,
    through_bytes: bool = True,
) -> tuple[dict[str, float], np.ndarray]:
    """Pooled test metrics from securely summed statistics (and the confusion)."""
    server, parties = secagg
    vectors = {p.site_id: p.statistics_vector(text, cfg) for p in providers}
    total = secure_sum_inprocess(
        server,
        parties,
        secagg_round_id(round_id, "evaluate"),
        vectors,
        secagg_codec(cfg, len(providers)),
        through_bytes=through_bytes,
    )
    num_classes = text.features.shape[0]
    metrics = metrics_from_statistics(total.values, num_classes, cfg.auc_bins)
    confusion, _ = split_statistics(total.values, num_classes, cfg.auc_bins)
    return metrics, confusion


def run_vfl_inprocess(
    cfg: VflClipConfig,
    knowledge: KnowledgeProvider,
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

    ``dropouts`` maps a round to image-provider ids that vanish after masking
    (their data leave the sum; the run goes on if enough providers remain).
    The final round is always evaluated.
    """
    check_image_providers(len(providers))
    ids = [p.site_id for p in providers]
    if len(set(ids)) != len(ids):
        raise ValueError(f"image providers need distinct site ids, found {ids}")
    server, parties = setup_inprocess(
        ids, cfg.secagg_threshold or None, through_bytes, traffic
    )
    codec = secagg_codec(cfg, len(providers))
    history = VflHistory()
    for round_id in range(1, rounds + 1):
        text = _wire(knowledge.text_features(round_id), through_bytes, traffic)
        active = [p for p in providers if p.site_id in server.active]
        vectors = {
            p.site_id: p.gradient_vector(text, cfg.batch_size, seed * 7919 + round_id)
            for p in active
        }
        total = secure_sum_inprocess(
            server,
            parties,
            secagg_round_id(round_id, "train"),
            vectors,
            codec,
            drop_before_masking=(dropouts or {}).get(round_id, ()),
            through_bytes=through_bytes,
            traffic=traffic,
        )
        aggregate = knowledge.aggregate_from_sum(round_id, total.values)
        step = knowledge.apply(_wire(aggregate, through_bytes, traffic))
        history.train_loss.append(step["train_loss"])
        history.contributors.append(total.contributors)
        if round_id == rounds or (evaluate_every and round_id % evaluate_every == 0):
            remaining = [p for p in providers if p.site_id in server.active]
            metrics, history.confusion = evaluate_secure(
                cfg,
                knowledge.text_features(round_id),
                remaining,
                (server, parties),
                round_id,
                through_bytes,
            )
            history.evaluations.append({"round": float(round_id), **metrics})
            logger.info(
                "round %d: loss %.4f, %s", round_id, step["train_loss"], metrics
            )
    return history
