"""The classification baseline as a federated task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor, nn
from torch.utils.data import Dataset

from fedmed.comm.selection import load_state, trainable_state
from fedmed.config import FlatConfig, PlatformConfig
from fedmed.data.medmnist_npz import class_names, load_split
from fedmed.data.sites import heldout_dir, locate_site
from fedmed.data.synth_dermamnist import synthesize
from fedmed.metrics.classification import (
    classification_metrics,
    classification_statistics,
    dense_classification_statistics,
    pooled_classification_metrics,
)
from fedmed.tasks.base import RoundResult, SiteData, Task
from fedmed.tasks.classify.config import ClassifyConfig
from fedmed.tasks.classify.data import ImageArrayDataset, load_site_splits
from fedmed.tasks.classify.model import build_classifier, input_size
from fedmed.tasks.classify.train import predict, train_local
from fedmed.tasks.registry import register_task


@register_task
class ClassifyTask(Task):
    """timm ViT on MedMNIST-format data: full fine-tuning, linear probe or LoRA."""

    name = "classify"
    evaluate_metric_names = ("accuracy", "auc", "loss")
    train_metric_names = ("train_loss", "steps")
    config_class = ClassifyConfig

    default_data_dir = "data/dermamnist"

    def __init__(self, cfg: ClassifyConfig, platform: PlatformConfig) -> None:
        super().__init__(cfg, platform)
        self.partitioner = platform.partition
        self.partition_alpha = platform.partition_alpha
        self.num_classes = len(class_names(cfg.dataset))

    @property
    def frozen_parts(self) -> tuple[str, ...]:  # type: ignore[override]
        """The frozen ViT of a linear probe or LoRA; full fine-tuning shares nothing."""
        return () if self.cfg.mode == "full" else ("",)

    def build_model(self) -> nn.Module:
        return build_classifier(self.cfg, self.num_classes, self.seed)

    def exchanged(self, model: nn.Module) -> dict[str, Tensor]:
        return trainable_state(model)

    def load_exchanged(self, model: nn.Module, state: Mapping[str, Tensor]) -> None:
        load_state(model, state, expected=trainable_state(model))

    def site_data(self, node_config: FlatConfig) -> SiteData:
        location = locate_site(self._data_dir, node_config)
        splits = load_site_splits(
            location,
            self.cfg.dataset,
            self.cfg.data_size,
            self.partitioner,
            self.partition_alpha,
            self.seed,
        )
        return SiteData(
            location.site_id, splits["train"], splits["test"], splits["val"]
        )

    def fit(
        self, model: nn.Module, data: SiteData, round_config: FlatConfig
    ) -> RoundResult:
        server_round = int(round_config.get("server-round", 1))
        metrics = train_local(
            model,
            data.train,
            side=input_size(model),
            lr=float(round_config.get("lr", self.cfg.lr)),
            weight_decay=self.cfg.weight_decay,
            batch_size=self.cfg.batch_size,
            epochs=self.cfg.local_epochs,
            max_steps=self.cfg.max_steps_per_round,
            seed=self.seed * 100_003 + data.site_id * 1_009 + server_round,
        )
        return RoundResult(num_examples=data.num_train, metrics=metrics)

    def evaluate(self, model: nn.Module, data: SiteData) -> RoundResult:
        labels, probs = predict(
            model, data.test, side=input_size(model), batch_size=256
        )
        return RoundResult(
            num_examples=len(labels),
            metrics=classification_metrics(labels, probs),
            statistics=classification_statistics(labels, probs),
        )

    def pooled_metrics(
        self, site_statistics: Sequence[Mapping[str, list[float]]]
    ) -> dict[str, float]:
        return pooled_classification_metrics(site_statistics, self.num_classes)

    def secure_statistics(
        self, statistics: Mapping[str, list[float]] | None
    ) -> dict[str, list[float]]:
        return dense_classification_statistics(statistics, self.num_classes)

    def heldout_data(self) -> Dataset | None:
        folder = heldout_dir(self._data_dir)
        if folder is None:
            return None
        images, labels = load_split(
            folder, self.cfg.dataset, self.cfg.data_size, "test"
        )
        return ImageArrayDataset(images, labels)

    def evaluate_heldout(self, model: nn.Module, dataset: Dataset) -> dict[str, float]:
        labels, probs = predict(model, dataset, side=input_size(model), batch_size=256)
        return classification_metrics(labels, probs)

    def synthesize_data(self, out: Path, num_sites: int, seed: int) -> None:
        synthesize(out, num_sites=num_sites, size=self.cfg.data_size, seed=seed)
