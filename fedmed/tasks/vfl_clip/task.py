"""VFL-CLIP as a fedmed task: the Task contract plus the two VFL roles.

Through the :class:`Task` contract (``mode = local | pooled``, and a
horizontal federated CoOp if run with FedAvg) the model is the knowledge
provider's :class:`CoopTextModel`: only the CoOp context (``prompt_learner.ctx``)
is exchanged, ``fit`` trains it on a site's frozen image embeddings and
``evaluate`` returns AUC/ACC with the sufficient statistics the server sums.

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
from pathlib import Path

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
    CoopTextModel,
    ImageEncoder,
    build_image_encoder,
    build_text_model,
)
from fedmed.tasks.vfl_clip.roles import ImageProvider, KnowledgeProvider, resolve_role
from fedmed.tasks.vfl_clip.train import predict_logits, train_centralised


@register_task
class VflClipTask(Task):
    """CLIP + CoOp split between image providers and a knowledge provider."""

    name = "vfl-clip"
    frozen_parts = ("", "tokenizer")  # text tower + tokenizer; the context trains
    config_class = VflClipConfig
    federation = "vertical"
    default_data_dir = "data/dermamnist"

    def __init__(self, cfg: VflClipConfig, platform: PlatformConfig) -> None:
        super().__init__(cfg, platform)
        self.partitioner = platform.partition
        self.partition_alpha = platform.partition_alpha
        self._encoder: ImageEncoder | None = None  # built on the first cache miss

    @property
    def num_classes(self) -> int:
        return len(self.cfg.classes)

    # ------------------------------------------------------------ Task contract
    def build_model(self) -> nn.Module:
        return build_text_model(self.cfg, self.seed)

    def exchanged(self, model: nn.Module) -> dict[str, Tensor]:
        return trainable_state(model)

    def load_exchanged(self, model: nn.Module, state: Mapping[str, Tensor]) -> None:
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
        server_round = int(round_config.get("server-round", 1))
        embeddings, labels = data.train.tensors()  # type: ignore[attr-defined]
        losses = train_centralised(
            model,  # type: ignore[arg-type]
            embeddings,
            labels,
            steps=self.cfg.local_steps,
            lr=float(round_config.get("lr", self.cfg.lr)),
            batch_size=self.cfg.batch_size,
            seed=self.seed * 100_003 + data.site_id * 1_009 + server_round,
        )
        return RoundResult(data.num_train, {"train_loss": float(np.mean(losses))})

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
    def knowledge_provider(self) -> KnowledgeProvider:
        """The knowledge provider: text tower + CoOp context + Adam (lr from config)."""
        return KnowledgeProvider(build_text_model(self.cfg, self.seed), self.cfg.lr)

    def image_provider(self, node_config: FlatConfig) -> ImageProvider:
        """This node's image provider: cached embeddings of its train/test splits."""
        role = resolve_role(node_config, self.cfg)
        if role.role != "image-provider" or role.site is None:
            raise ValueError(f"node is the {role.role}, not an image provider")
        if "partition-id" in node_config and "data-dir" not in node_config:
            total = int(node_config.get("num-partitions", 2))
            node_config = {"partition-id": role.site, "num-partitions": total - 1}
        location = locate_site(self._data_dir, node_config)
        train = self._embedded(location, "train")
        test = self._embedded(location, "test")
        return ImageProvider(role.site, train, test)

    # ------------------------------------------------------------ internals
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
