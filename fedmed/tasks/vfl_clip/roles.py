"""The two VFL-CLIP roles and how a node finds its role.

*Image providers* (hospitals) hold frozen image embeddings and labels; per
round they turn the class text features ``T`` into the gradient of their
summed CoOp loss (paper Eq. 1) and, for evaluation, into sufficient
statistics. *Knowledge providers* (specialist centres) each hold a text
tower, class descriptions and a CoOp context; the image providers use the
(securely summed) mean of their ``T_k`` and each applies its share of the
aggregated gradient with Adam. Neither sees the other's data; the server in between
sees masked vectors and sums only.

Role resolution: a deployment node says ``role = "image-provider"`` (with
``site-id``) or ``"knowledge-provider"`` (with ``knowledge-id`` when there are
several) in its node config. In simulation the partition
``vfl-clip.knowledge-provider-partition`` (default -1: the last one) and, with
``vfl-clip.knowledge-providers = K``, the ``K - 1`` before it are knowledge
providers; the other partitions are image providers ``0 .. n-K-1`` reading
site folders ``site_0 .. site_<n-K-1>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from fedmed.config import FlatConfig
from fedmed.tasks.vfl_clip.config import VflClipConfig
from fedmed.tasks.vfl_clip.data import EmbeddedSplit
from fedmed.tasks.vfl_clip.messages import AggregatedGradient, TextFeatures
from fedmed.tasks.vfl_clip.metrics import evaluation_statistics
from fedmed.tasks.vfl_clip.model import CoopTextModel
from fedmed.tasks.vfl_clip.train import (
    batch_indices,
    knowledge_step,
    make_optimizer,
    predict_logits,
    provider_gradient,
)

Role = Literal["image-provider", "knowledge-provider"]
ROLES = ("image-provider", "knowledge-provider")
MIN_IMAGE_PROVIDERS = 2


class VflSetupError(ValueError):
    """The federation cannot run VFL-CLIP as configured."""


def check_image_providers(count: int) -> None:
    """Refuse fewer than two image providers: a sum over one reveals it."""
    if count < MIN_IMAGE_PROVIDERS:
        raise VflSetupError(
            f"VFL-CLIP needs at least {MIN_IMAGE_PROVIDERS} image providers, found "
            f"{count}: secure aggregation over a single provider would reveal its "
            "gradients to the server and the knowledge provider. Add image providers "
            "(simulation: raise num-supernodes; deployment: more nodes with "
            "role=image-provider)."
        )


@dataclass(frozen=True)
class NodeRole:
    """A node's role: image providers' site index, knowledge providers' index."""

    role: Role
    site: int | None = None
    knowledge: int | None = None


def knowledge_partitions(cfg: VflClipConfig, total: int) -> list[int]:
    """Simulation partitions of the knowledge providers, in knowledge-index order.

    ``knowledge-provider-partition`` (default -1: the last) is knowledge
    provider 0; with ``knowledge-providers = K`` the ``K - 1`` partitions
    before it are knowledge providers 1..K-1.
    """
    count = cfg.knowledge_providers
    check_image_providers(total - count)
    first = cfg.knowledge_provider_partition % max(total, 1)
    return [(first - j) % total for j in range(count)]


def resolve_role(node_config: FlatConfig, cfg: VflClipConfig) -> NodeRole:
    """Role from ``role`` (deployment) or from the partition id (simulation)."""
    if "role" in node_config:
        role = str(node_config["role"])
        if role not in ROLES:
            raise VflSetupError(
                f"node config role must be one of {ROLES}, found {role!r}"
            )
        if role == "knowledge-provider":
            index = int(node_config.get("knowledge-id", 0))
            return NodeRole("knowledge-provider", knowledge=index)
        return NodeRole("image-provider", int(node_config.get("site-id", 0)))
    if "partition-id" not in node_config:
        raise VflSetupError("node config has neither 'role' nor 'partition-id'")
    partition = int(node_config["partition-id"])
    total = int(node_config.get("num-partitions", 1))
    knowledge = knowledge_partitions(cfg, total)
    if partition in knowledge:
        return NodeRole("knowledge-provider", knowledge=knowledge.index(partition))
    site = partition - sum(1 for k in knowledge if k < partition)
    return NodeRole("image-provider", site)


class ImageProvider:
    """A hospital's side: local embeddings in, gradient sums and statistics out."""

    def __init__(self, site_id: int, train: EmbeddedSplit, test: EmbeddedSplit):
        self.site_id = site_id
        self.train = train
        self.test = test

    def gradient_vector(
        self, text: TextFeatures, batch_size: int = 0, seed: int = 0
    ) -> np.ndarray:
        """``[G_i, loss_i, N_i]`` of the (batch) summed loss, for secure aggregation."""
        keep = batch_indices(len(self.train), batch_size, seed)
        embeddings, labels = self.train.tensors()
        update = provider_gradient(
            embeddings[keep],
            labels[keep],
            torch.from_numpy(np.asarray(text.features, dtype=np.float32)),
            text.logit_scale,
        )
        return update.to_vector()

    def statistics_vector(self, text: TextFeatures, cfg: VflClipConfig) -> np.ndarray:
        """Evaluation sufficient statistics of the local test split."""
        embeddings, labels = self.test.tensors()
        features = torch.from_numpy(np.asarray(text.features, dtype=np.float32))
        logits = predict_logits(embeddings, features, text.logit_scale)
        return evaluation_statistics(
            logits, labels.numpy(), cfg.auc_bins, text.logit_scale
        )


class KnowledgeProvider:
    """A specialist centre's side: publishes ``T``, applies aggregated gradients.

    With ``K`` knowledge providers the image providers use the mean of their
    text features, ``T = (1/K) sum_k T_k``, so ``dL/dT_k = (1/K) dL/dT``:
    ``share`` is that ``1/K`` (1 for a single knowledge provider).
    """

    def __init__(self, model: CoopTextModel, lr: float, share: float = 1.0):
        if not 0 < share <= 1:
            raise ValueError(f"knowledge share must be in (0, 1], found {share}")
        self.model = model
        self.optimizer = make_optimizer(model, lr)
        self.share = share

    @torch.no_grad()
    def text_features(self, round_id: int) -> TextFeatures:
        """``T`` for the current context (what the image providers receive)."""
        features = self.model().float().numpy()
        return TextFeatures(round_id, features, float(self.model.logit_scale))

    @torch.no_grad()
    def text_vector(self) -> np.ndarray:
        """``[T_k (C*d), s_k]``: what this provider masks for the secure mean."""
        features = self.model().double().numpy().reshape(-1)
        return np.concatenate([features, [float(self.model.logit_scale)]])

    def apply(self, aggregate: AggregatedGradient) -> dict[str, float]:
        """One Adam step on the pooled mean-loss gradient; returns the pooled loss."""
        knowledge_step(
            self.model,
            self.optimizer,
            aggregate.gradient_sum * self.share,
            aggregate.count,
        )
        return {
            "train_loss": aggregate.loss_sum / aggregate.count,
            "num_examples": float(aggregate.count),
        }

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Context and Adam moments as arrays (kept between messages on the node)."""
        arrays = {"ctx": self.model.prompt_learner.ctx.detach().numpy().copy()}
        state = self.optimizer.state.get(self.model.prompt_learner.ctx, {})
        for name in ("exp_avg", "exp_avg_sq"):
            if name in state:
                arrays[f"adam_{name}"] = state[name].numpy().copy()
        if "step" in state:
            arrays["adam_step"] = np.asarray(float(state["step"]))
        return arrays

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`state_arrays` saved."""
        ctx = self.model.prompt_learner.ctx
        with torch.no_grad():
            ctx.copy_(torch.as_tensor(arrays["ctx"], dtype=ctx.dtype))
        if "adam_step" in arrays:
            self.optimizer.state[ctx] = {
                "step": torch.tensor(float(arrays["adam_step"])),
                "exp_avg": torch.as_tensor(arrays["adam_exp_avg"]).clone(),
                "exp_avg_sq": torch.as_tensor(arrays["adam_exp_avg_sq"]).clone(),
            }
