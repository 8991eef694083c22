"""Several knowledge providers behind one knowledge channel: secure text mean.

Each knowledge provider ``k`` keeps its own class descriptions, CoOp context
and text tower and computes its class text features ``T_k``. The image
providers score against the mean ``T = (1/K) sum_k T_k`` (and the mean of
the providers' logit scales), which the server gets from a secure sum over
the knowledge providers: it unmasks ``sum_k [T_k, s_k]`` only, so neither the
server nor the image providers ever see one provider's ``T_k``. The
aggregated gradient ``sum_i G_i`` goes to every knowledge provider, which
backpropagates its share ``1/K`` of it through its own tower
(``KnowledgeProvider.share``). The result is exactly centralised training of
:class:`fedmed.tasks.vfl_clip.model.MeanTextModel`.

Per training round ``r`` (``K >= 2``)::

    server -> knowledge provider k    MaskRequest (+ KeyDirectory, first sum)
    knowledge provider k -> server    MaskedInput of [T_k (C*d), s_k]
    server <-> knowledge providers    UnmaskRequest / UnmaskResponse
    server -> image providers         TextFeatures(r, sum T_k / K, sum s_k / K)
    ... secure sum over image providers (protocol.train_round) ...
    server -> every knowledge provider  AggregatedGradient(r, sum G_i, ...)

Text sums use a 64-bit ring (exact to ~1e-13 at range 1e6): ``T`` feeds every
gradient, so its rounding would not stay in one round. With two knowledge
providers each can compute the other's ``T_k`` from the mean if it ever
sees the mean; only the server and the image providers do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from fedmed.privacy import FixedPointCodec, SecAggServer
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
from fedmed.tasks.vfl_clip.messages import AggregatedGradient, TextFeatures
from fedmed.tasks.vfl_clip.model import PUBLISHED_TEXT
from fedmed.tasks.vfl_clip.roles import KnowledgeProvider

TEXT_SUM_BITS = 64


class GradientSink(Protocol):
    """Delivers the aggregated gradient to one knowledge provider."""

    def apply(self, aggregate: AggregatedGradient) -> dict[str, float]: ...


def text_codec(cfg: VflClipConfig, num_knowledge: int) -> FixedPointCodec:
    """The codec knowledge providers mask ``[T_k, s_k]`` with."""
    return FixedPointCodec(TEXT_SUM_BITS, cfg.secagg_range, num_knowledge)


def mean_text_features(
    total: Sequence[float], num_knowledge: int, num_classes: int, round_id: int
) -> TextFeatures:
    """``TextFeatures`` of the mean from a decoded sum ``sum_k [T_k, s_k]``."""
    mean = np.asarray(total, dtype=np.float64) / num_knowledge
    if (len(mean) - 1) % num_classes:
        raise ValueError(
            f"text sum has {len(mean)} values, expected C*d + 1 with C={num_classes}"
        )
    features = mean[:-1].reshape(num_classes, -1).astype(np.float32)
    return TextFeatures(round_id, features, float(mean[-1]))


def published_state(text: TextFeatures) -> dict[str, Tensor]:
    """What a ``K >= 2`` server checkpoints: the mean ``T`` and logit scale
    (:meth:`fedmed.tasks.vfl_clip.model.MeanTextModel.load_published` scores it)."""
    features = torch.from_numpy(np.asarray(text.features, dtype=np.float32).copy())
    scale = torch.tensor(float(text.logit_scale), dtype=torch.float32)
    return dict(zip(PUBLISHED_TEXT, (features, scale), strict=True))


@dataclass
class SecureKnowledge:
    """:class:`~fedmed.tasks.vfl_clip.protocol.KnowledgeChannel` to ``K >= 2``
    knowledge providers, through a secure sum of their text features.

    ``server`` and ``channel`` are a secure-aggregation server and a party
    channel over the knowledge providers (ids ``0..K-1``), set up once;
    ``appliers`` deliver the aggregated gradient to each provider. The mean
    ``T`` is cached until the next gradient changes the contexts.
    """

    server: SecAggServer
    channel: PartyChannel
    appliers: Sequence[GradientSink]
    num_classes: int
    sums_done: int = 0
    text: TextFeatures | None = field(default=None, repr=False)

    def text_features(self, round_id: int) -> TextFeatures:
        if self.text is None or self.text.round != round_id:
            self.sums_done += 1
            total = secure_sum(self.server, self.channel, self.sums_done)
            self.text = mean_text_features(
                total.values, len(self.appliers), self.num_classes, round_id
            )
            if len(total.contributors) != len(self.appliers):
                raise RuntimeError(
                    f"round {round_id}: knowledge providers {total.dropped} did not "
                    "send their text features; the mean needs every one of them"
                )
        return self.text

    def apply(self, aggregate: AggregatedGradient) -> dict[str, float]:
        self.text = None  # every context moves
        steps = [sink.apply(aggregate) for sink in self.appliers]
        return steps[0]


def inprocess_knowledge(
    cfg: VflClipConfig,
    providers: Sequence[KnowledgeProvider],
    through_bytes: bool = True,
    traffic: Traffic | None = None,
) -> SecureKnowledge:
    """Key setup among in-process knowledge providers and a :class:`SecureKnowledge`."""
    if len(providers) < 2:
        raise ValueError("a secure text mean needs at least 2 knowledge providers")
    channel = InProcessChannel(
        {k: SecAggParty(k) for k in range(len(providers))},
        lambda k, _job: providers[k].text_vector(),
        text_codec(cfg, len(providers)),
        through_bytes,
        traffic,
    )
    server = SecAggServer()
    run_setup(server, channel, list(range(len(providers))))
    appliers = [_InProcessApply(p, through_bytes, traffic) for p in providers]
    return SecureKnowledge(server, channel, appliers, len(cfg.classes))


@dataclass
class _InProcessApply:
    """Hands one in-process knowledge provider the aggregate as a message."""

    provider: KnowledgeProvider
    through_bytes: bool
    traffic: Traffic | None

    def apply(self, aggregate: AggregatedGradient) -> dict[str, float]:
        return self.provider.apply(send(aggregate, self.through_bytes, self.traffic))
