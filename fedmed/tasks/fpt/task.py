"""Fine-grained Prompt Tuning as a federated task (baselines via ``fpt.method``).

Per site and round: the side network, prompts, fusion and head train on the
site's images (FPT), reading the frozen model's K/V from an on-disk cache that
is built once per site and split; only those trainable tensors travel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
from torch import Tensor, nn
from torch.utils.data import Dataset

from fedmed.comm.selection import load_state, trainable_state
from fedmed.config import FlatConfig, PlatformConfig
from fedmed.data.image_folder import ImageRecord, load_rgb
from fedmed.data.sites import heldout_dir, locate_site
from fedmed.data.synth_highres import write_synthetic_highres
from fedmed.metrics.classification import (
    classification_metrics,
    classification_statistics,
    dense_classification_statistics,
    pooled_classification_metrics,
)
from fedmed.tasks.base import RoundResult, SiteData, Task
from fedmed.tasks.fpt.baselines import build_baseline
from fedmed.tasks.fpt.config import FptConfig
from fedmed.tasks.fpt.data import (
    CACHED,
    FptImageDataset,
    Normalisation,
    eval_transform,
    heldout_records,
    method_inputs,
    site_records,
    split_transforms,
)
from fedmed.tasks.fpt.frozen import FrozenKV, checkpoint_path, create_vit
from fedmed.tasks.fpt.kv_cache import KVCache, file_identity, open_or_build_cache
from fedmed.tasks.fpt.model import build_fpt_model
from fedmed.tasks.fpt.train import predict, train_round
from fedmed.tasks.registry import register_task

CACHE_FOLDER = ".fpt_cache"
EVAL_BATCH = 64


@register_task
class FptTask(Task):
    """FPT (Huang et al., MICCAI 2024); baselines full/linear/LoRA/BitFit/prompt."""

    name = "fpt"
    evaluate_metric_names = ("accuracy", "auc", "loss")
    train_metric_names = ("train_loss", "steps", "lr", "kv_cache_mb")
    config_class = FptConfig

    default_data_dir = "data/fpt_synth"

    def __init__(self, cfg: FptConfig, platform: PlatformConfig) -> None:
        super().__init__(cfg, platform)
        self.num_rounds = platform.num_server_rounds
        meta_vit = create_vit(cfg, self.seed, device="meta")
        self._frozen_params = sum(p.numel() for p in meta_vit.parameters())
        pretrained = meta_vit.pretrained_cfg
        self.norm = Normalisation(tuple(pretrained["mean"]), tuple(pretrained["std"]))
        self._frozen_kv: FrozenKV | None = None

    @property
    def frozen_parts(self) -> tuple[str, ...]:  # type: ignore[override]
        """FPT's live frozen ViT (absent when K/V are preloaded); a baseline's ViT."""
        return ("frozen",) if self.cfg.method == "fpt" else ("vit",)

    def build_model(self) -> nn.Module:
        if self.cfg.method == "fpt":
            return build_fpt_model(self.cfg, self.seed)
        return build_baseline(self.cfg, self.seed)

    def exchanged(self, model: nn.Module) -> dict[str, Tensor]:
        return trainable_state(model)

    def full_model_params(self, model: nn.Module) -> int:
        """The frozen ViT counts too when preloading keeps it out of ``model``."""
        own = sum(p.numel() for p in model.parameters())
        holds_backbone = self.cfg.method != "fpt" or not self.cfg.preload
        return own if holds_backbone else own + self._frozen_params

    def load_exchanged(self, model: nn.Module, state: Mapping[str, Tensor]) -> None:
        load_state(model, state, expected=trainable_state(model))

    def site_data(self, node_config: FlatConfig) -> SiteData:
        location = locate_site(self._data_dir, node_config)
        splits = site_records(self.cfg, location, self.seed)
        if not splits["train"] or not splits["test"]:
            raise ValueError(
                f"{location.folder}: site {location.site_id} needs train and test "
                f"images, found {len(splits['train'])} and {len(splits['test'])}"
            )
        root = self._cache_root(location.folder, location.site_id)
        datasets = {
            split: self._dataset(records, split, root, train=split == "train")
            for split, records in splits.items()
        }
        return SiteData(
            location.site_id,
            datasets["train"],
            datasets["test"],
            datasets["val"] if splits["val"] else None,
        )

    def fit(
        self, model: nn.Module, data: SiteData, round_config: FlatConfig
    ) -> RoundResult:
        server_round = int(round_config.get("server-round", 1))
        metrics = train_round(
            model,
            data.train,
            self.cfg,
            lr=float(round_config.get("lr", self.cfg.lr)),
            server_round=server_round,
            num_rounds=max(self.num_rounds, server_round),
            seed=self.seed * 100_003 + data.site_id * 1_009 + server_round,
        )
        cache = getattr(data.train, "cache", None)
        if cache is not None:
            metrics["kv_cache_mb"] = cache.size_bytes / 2**20
        return RoundResult(num_examples=data.num_train, metrics=metrics)

    def evaluate(self, model: nn.Module, data: SiteData) -> RoundResult:
        labels, probs = predict(model, data.test, EVAL_BATCH, self.cfg.num_workers)
        return RoundResult(
            num_examples=len(labels),
            metrics=classification_metrics(labels, probs),
            statistics=classification_statistics(labels, probs),
        )

    def pooled_metrics(
        self, site_statistics: Sequence[Mapping[str, list[float]]]
    ) -> dict[str, float]:
        return pooled_classification_metrics(site_statistics, self.cfg.num_classes)

    def secure_statistics(
        self, statistics: Mapping[str, list[float]] | None
    ) -> dict[str, list[float]]:
        return dense_classification_statistics(statistics, self.cfg.num_classes)

    def heldout_data(self) -> Dataset | None:
        folder = heldout_dir(self._data_dir)
        if folder is None:
            return None
        records = heldout_records(self.cfg, folder)
        root = self._cache_root(folder, "heldout")
        return self._dataset(records, "heldout", root, train=False)

    def evaluate_heldout(self, model: nn.Module, dataset: Dataset) -> dict[str, float]:
        labels, probs = predict(model, dataset, EVAL_BATCH, self.cfg.num_workers)
        return classification_metrics(labels, probs)

    def synthesize_data(self, out: Path, num_sites: int, seed: int) -> None:
        write_synthetic_highres(
            out,
            num_sites,
            seed,
            size=self.cfg.high_res,
            images_per_site=self.cfg.synth_images_per_site,
            heldout_images=self.cfg.synth_heldout_images,
        )

    # ------------------------------------------------------------------ caching
    def _cache_root(self, folder: Path, site: int | str) -> Path:
        if self.cfg.cache_dir:
            return Path(self.cfg.cache_dir) / f"site_{site}"
        return Path(folder) / CACHE_FOLDER

    def _dataset(
        self, records: list[ImageRecord], split: str, root: Path, train: bool
    ) -> FptImageDataset:
        inputs = method_inputs(self.cfg)
        transforms = split_transforms(self.cfg, self.norm, train)
        cache = None
        if CACHED in inputs and records:
            cache = self._cache(records, split, root)
        return FptImageDataset(records, inputs, transforms, cache)

    def _cache(self, records: list[ImageRecord], split: str, root: Path) -> KVCache:
        high = eval_transform(self.cfg.high_res, self.norm)
        return open_or_build_cache(
            records,
            root,
            split,
            self.frozen_identity(),
            extractor=self._extractor,
            load_image=lambda record: high(load_rgb(record.path)),
            dtype=self.cfg.cache_dtype,
            batch_size=self.cfg.cache_batch_size,
        )

    def _extractor(self) -> FrozenKV:
        """The frozen model, built once per task instance and only when needed."""
        if self._frozen_kv is None:
            vit = create_vit(self.cfg, self.seed)
            self._frozen_kv = FrozenKV(vit, self.cfg.token_ratio)
        return self._frozen_kv

    def frozen_identity(self) -> dict[str, Any]:
        """Everything that determines the frozen K/V of an image (cache key)."""
        checkpoint = checkpoint_path(self.cfg)
        return {
            "model": self.cfg.frozen_model,
            "overrides": self.cfg.frozen_overrides(),
            "high_res": self.cfg.high_res,
            "token_ratio": self.cfg.token_ratio,
            "mean": self.norm.mean,
            "std": self.norm.std,
            "checkpoint": file_identity(checkpoint) if checkpoint else None,
            "seed": None if checkpoint else self.seed,
            "timm": timm.__version__,
        }
