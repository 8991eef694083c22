"""VFL-CLIP as a fedmed task: the Task contract plus the VFL roles.

Through the :class:`Task` contract (the local and pooled baselines, held-out
scoring, checkpoints) the model is the knowledge side as one model: the
knowledge provider's :class:`CoopTextModel`, or with several the
:class:`MeanTextModel` of their towers. Only CoOp contexts are exchanged;
``fit`` does one VFL round's optimisation (one Adam step on the samples that
round draws, the optimiser kept across rounds) on a site's or the image
providers' pooled embeddings, and ``evaluate`` returns AUC/ACC with the
sufficient statistics the server sums.

The vertical protocol (paper Sec. III-A) uses the role methods instead:
:meth:`VflClipTask.knowledge_provider`, :meth:`VflClipTask.image_provider`,
:func:`fedmed.tasks.vfl_clip.roles.resolve_role` and the secure aggregator of
:mod:`fedmed.privacy`; :mod:`fedmed.tasks.vfl_clip.protocol` holds the protocol
steps, run in one process by ``run_vfl_inprocess`` and over Flower messages by
``strategies.vfl_clip`` (``federation = "vertical"`` makes the ServerApp pick
it instead of FedAvg).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from weakref import WeakKeyDictionary

import numpy as np
import torch
from torch import Tensor, nn

from fedmed.comm.selection import load_state, trainable_state
from fedmed.config import FlatConfig, PlatformConfig
from fedmed.data.sites import SiteLocation, heldout_dir, locate_site
from fedmed.data.synth_dermamnist import synthesize
from fedmed.tasks.base import RoundResult, SiteData, Task
from fedmed.tasks.registry import register_task
from fedmed.tasks.vfl_clip.config import VflClipConfig
from fedmed.tasks.vfl_clip.data import (
    EmbeddedSplit,
    cache_folder,
    cached_embeddings,
    encoder_identity,
    site_images,
)
from fedmed.tasks.vfl_clip.metrics import (
    evaluation_statistics,
    exact_metrics,
    metrics_from_statistics,
)
from fedmed.tasks.vfl_clip.model import (
    PUBLISHED_TEXT,
    CoopTextModel,
    ImageEncoder,
    MeanTextModel,
    build_image_encoder,
    build_text_model,
)
from fedmed.tasks.vfl_clip.roles import (
    ImageProvider,
    KnowledgeProvider,
    VflSetupError,
    resolve_role,
)
from fedmed.tasks.vfl_clip.train import (
    batch_seed,
    centralised_step,
    make_optimizer,
    pooled_batch,
    predict_logits,
)


@register_task
class VflClipTask(Task):
    """CLIP + CoOp split between image providers and a knowledge provider."""

    name = "vfl-clip"
    frozen_parts = ("", "tokenizer")  # text tower + tokenizer; the context trains
    config_class = VflClipConfig
    federation = "vertical"
    always_secure_aggregation = True  # every sum over image providers is masked
    default_data_dir = "data/dermamnist"

    def __init__(self, cfg: VflClipConfig, platform: PlatformConfig) -> None:
        super().__init__(cfg, platform)
        self.partitioner = platform.partition
        self.partition_alpha = platform.partition_alpha
        self._encoder: ImageEncoder | None = None  # built on the first cache miss
        # Adam per model, kept across fit() calls as the knowledge provider keeps it
        self._optimizers: WeakKeyDictionary[nn.Module, torch.optim.Optimizer] = (
            WeakKeyDictionary()
        )

    @property
    def num_classes(self) -> int:
        return len(self.cfg.classes)

    # ------------------------------------------------------------ Task contract
    def build_model(self) -> nn.Module:
        """The knowledge side as one model: with several knowledge providers the
        mean of their towers (what VFL training equals), else the one tower."""
        models = [k.model for k in self.knowledge_providers()]
        return models[0] if len(models) == 1 else MeanTextModel(models)

    def exchanged(self, model: nn.Module) -> dict[str, Tensor]:
        return trainable_state(model)

    def load_exchanged(self, model: nn.Module, state: Mapping[str, Tensor]) -> None:
        """Load contexts, or a ``K >= 2`` run's checkpointed mean text features
        (:data:`~fedmed.tasks.vfl_clip.model.PUBLISHED_TEXT`) into a mean model."""
        if set(state) == set(PUBLISHED_TEXT) and isinstance(model, MeanTextModel):
            model.load_published(dict(state))
            return
        if isinstance(model, MeanTextModel):
            model.load_published(None)
        load_state(model, state, expected=trainable_state(model))

    def site_data(self, node_config: FlatConfig) -> SiteData:
        location = locate_site(self._data_dir, node_config)
        splits = {s: self._embedded(location, s) for s in ("train", "val", "test")}
        return SiteData(
            location.site_id, splits["train"], splits["test"], splits["val"]
        )

    def fit(
        self, model: nn.Module, data: SiteData, round_config: FlatConfig
    ) -> RoundResult:
        """One VFL round's optimisation on ``data``: the baselines' budget.

        A VFL round is one Adam step on the samples the image providers draw
        that round, with the knowledge provider's optimiser kept across rounds;
        ``fit`` does the same on one site's (local) or the providers' pooled
        data, so a baseline of ``R`` rounds has the federated run's budget.
        """
        server_round = int(round_config.get("server-round", 1))
        if model not in self._optimizers:
            self._optimizers[model] = make_optimizer(model, self.cfg.lr)  # type: ignore[arg-type]
        split: EmbeddedSplit = data.train  # type: ignore[assignment]
        keep = pooled_batch(
            split.part_sizes, self.cfg.batch_size, batch_seed(self.seed, server_round)
        )
        embeddings, labels = split.tensors()
        loss = centralised_step(
            model,  # type: ignore[arg-type]
            self._optimizers[model],
            embeddings[keep],
            labels[keep],
        )
        return RoundResult(len(keep), {"train_loss": loss})

    def baseline_sites(self, num_sites: int) -> list[SiteData]:
        """The image providers' sites only: the knowledge provider holds no images."""
        nodes = [
            {"partition-id": k, "num-partitions": num_sites} for k in range(num_sites)
        ]
        return [
            self.site_data(self._provider_node(node))
            for node in nodes
            if resolve_role(node, self.cfg).role == "image-provider"
        ]

    def evaluate(self, model: nn.Module, data: SiteData) -> RoundResult:
        logits, labels = self._logits(model, data.test)  # type: ignore[arg-type]
        scale = float(model.logit_scale)  # type: ignore[arg-type]
        stats = evaluation_statistics(logits, labels, self.cfg.auc_bins, scale)
        return RoundResult(
            num_examples=len(labels),
            metrics=exact_metrics(logits, labels),
            statistics={"vfl_clip_statistics": stats.tolist()},
        )

    def pooled_metrics(
        self, site_statistics: Sequence[Mapping[str, list[float]]]
    ) -> dict[str, float]:
        """Pooled AUC/ACC from the summed ``statistics`` of :meth:`evaluate`."""
        vector = np.sum(
            [np.asarray(s["vfl_clip_statistics"]) for s in site_statistics], axis=0
        )
        return metrics_from_statistics(vector, self.num_classes, self.cfg.auc_bins)

    def heldout_data(self) -> EmbeddedSplit | None:
        folder = heldout_dir(self._data_dir)
        if folder is None:
            return None
        return self._embedded(SiteLocation(site_id=-1, folder=folder), "test")

    def evaluate_heldout(self, model: nn.Module, dataset) -> dict[str, float]:
        logits, labels = self._logits(model, dataset)  # type: ignore[arg-type]
        return exact_metrics(logits, labels)

    def pool(self, sites: list[SiteData]) -> SiteData:
        """Pooled embeddings of several sites (the centralised CoOp baseline)."""
        splits = {
            name: EmbeddedSplit.concatenate([getattr(s, name) for s in sites])
            for name in ("train", "test", "val")
        }
        return SiteData(-1, splits["train"], splits["test"], splits["val"])

    def synthesize_data(self, out: Path, num_sites: int, seed: int) -> None:
        synthesize(out, num_sites=num_sites, size=self.cfg.data_size, seed=seed)

    # ------------------------------------------------------------ VFL roles
    def knowledge_provider(self, index: int = 0) -> KnowledgeProvider:
        """Knowledge provider ``index``: its text tower, class descriptions
        (``knowledge-templates``), CoOp context and Adam (lr from config).

        Provider 0's context is seeded by the run seed, provider ``k``'s by
        ``seed + k``; its share of the gradient is ``1 / knowledge-providers``.
        """
        count = self.cfg.knowledge_providers
        if not 0 <= index < count:
            raise VflSetupError(
                f"knowledge provider index must be in [0, {count}), found {index}"
            )
        cfg = replace(self.cfg, template=self.cfg.knowledge_prompts[index])
        model = build_text_model(cfg, self.seed, ctx_seed=self.seed + index)
        return KnowledgeProvider(model, self.cfg.lr, share=1.0 / count)

    def knowledge_providers(self) -> list[KnowledgeProvider]:
        """Every knowledge provider of this configuration (in-process runs)."""
        return [self.knowledge_provider(k) for k in range(self.cfg.knowledge_providers)]

    def image_provider(self, node_config: FlatConfig) -> ImageProvider:
        """This node's image provider: cached embeddings of its train/test splits."""
        role = resolve_role(node_config, self.cfg)
        if role.role != "image-provider" or role.site is None:
            raise ValueError(f"node is the {role.role}, not an image provider")
        location = locate_site(self._data_dir, self._provider_node(node_config))
        train = self._embedded(location, "train")
        test = self._embedded(location, "test")
        return ImageProvider(role.site, train, test)

    # ------------------------------------------------------------ internals
    def _provider_node(self, node_config: FlatConfig) -> FlatConfig:
        """An image provider's node config with partitions counted over providers.

        In simulation knowledge providers' partitions hold no images, so image
        provider ``k`` reads partition ``k`` of ``num-partitions - K``.
        """
        if "partition-id" not in node_config or "data-dir" in node_config:
            return node_config
        site = resolve_role(node_config, self.cfg).site
        total = int(node_config.get("num-partitions", 2))
        images = total - self.cfg.knowledge_providers
        return {"partition-id": site, "num-partitions": images}

    def _embedded(self, location: SiteLocation, split: str) -> EmbeddedSplit:
        images, labels = site_images(
            location, self.cfg, split, self.partitioner, self.partition_alpha, self.seed
        )
        return cached_embeddings(
            self._image_encoder,
            encoder_identity(self.cfg, self.seed),
            images,
            labels,
            cache_folder(self.cfg, location),
            self.cfg.embed_batch_size,
        )

    def _image_encoder(self) -> ImageEncoder:
        if self._encoder is None:
            self._encoder = build_image_encoder(self.cfg, self.seed)
        return self._encoder

    @torch.no_grad()
    def _logits(
        self, model: CoopTextModel, split: EmbeddedSplit
    ) -> tuple[np.ndarray, np.ndarray]:
        embeddings, labels = split.tensors()
        text = model()
        return predict_logits(
            embeddings, text, float(model.logit_scale)
        ), labels.numpy()
