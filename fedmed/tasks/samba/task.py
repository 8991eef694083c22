"""SAMBA as a fedmed task: federated mask-decoder fine-tuning for brain-tumour MRI.

Each hospital keeps SAM's image and prompt encoders (and the image
embeddings they produce) at home and trains only the mask decoder on its
BraTS cases, then the small voting network that fuses SAM's masks into the
three tumour labels, and optionally the YOLOv8 localizer. Only the decoder,
the voting network and, when ``samba.localizer = "federated"``, the localizer
are exchanged and averaged.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import Dataset

from fedmed.comm.selection import load_state, trainable_state
from fedmed.config import FlatConfig, PlatformConfig
from fedmed.data.brats import find_cases
from fedmed.data.sites import heldout_dir, locate_site
from fedmed.data.synth_brats import synthesize
from fedmed.tasks.base import RoundResult, SiteData, Task
from fedmed.tasks.registry import register_task
from fedmed.tasks.samba.config import SambaConfig
from fedmed.tasks.samba.data import (
    CaseDataset,
    cache_root,
    cases_of,
    site_cases,
    split_cases,
    training_samples,
)
from fedmed.tasks.samba.embedding_cache import EmbeddingCache
from fedmed.tasks.samba.evaluation import evaluate_case, evaluate_cases, stages_for
from fedmed.tasks.samba.inference import voting_item
from fedmed.tasks.samba.model import (
    LOCALIZER_PREFIX,
    SambaModel,
    build_samba_model,
    exchanged_prefixes,
    initial_decoder,
)
from fedmed.tasks.samba.overlays import write_overlay
from fedmed.tasks.samba.schedule import round_plan
from fedmed.tasks.samba.train import train_decoder
from fedmed.tasks.samba.voting import train_voting

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = "data/brats"
SYNTH_CASES_PER_SITE = 4


@register_task
class SambaTask(Task):
    """SAMBA (Barakat et al. 2023) on fedmed's task contract."""

    name = "samba"
    train_metric_names = (
        "decoder_samples",
        "decoder_epochs",
        "decoder_dice_loss",
        "voting_dice_loss",
        "voting_epochs",
        "voting_val_loss",
        "yolo_map50",
        "yolo_recall",
    )
    frozen_parts = ("sam.image_encoder", "sam.prompt_encoder")
    config_class = SambaConfig

    default_data_dir = DEFAULT_DATA_DIR

    def __init__(self, cfg: SambaConfig, platform: PlatformConfig) -> None:
        super().__init__(cfg, platform)
        self.num_rounds = platform.num_server_rounds
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def build_model(self) -> SambaModel:
        return build_samba_model(self.cfg, self.seed).to(self.device)

    def model_key(self) -> tuple[str, str, int, str]:
        return (*super().model_key(), str(self.device))

    def exchanged(self, model: nn.Module) -> dict[str, Tensor]:
        prefixes = exchanged_prefixes(self.cfg)
        buffers = [
            name
            for name, buf in model.named_buffers()
            if name.startswith(LOCALIZER_PREFIX) and buf.is_floating_point()
        ]
        extra = buffers if LOCALIZER_PREFIX in prefixes else []
        state = trainable_state(model, extra=extra)
        return {k: v for k, v in state.items() if k.startswith(prefixes)}

    def load_exchanged(self, model: nn.Module, state: Mapping[str, Tensor]) -> None:
        load_state(model, state, self.exchanged(model))

    def site_data(self, node_config: FlatConfig) -> SiteData:
        location = locate_site(self.data_dir, node_config)
        cases = site_cases(location.folder, location.partition, location.num_partitions)
        train, val, test = split_cases(
            cases, self.cfg.test_fraction, self.cfg.val_fraction
        )
        return SiteData(
            site_id=location.site_id,
            train=CaseDataset(train),
            test=CaseDataset(test),
            val=CaseDataset(val) if val else None,
        )

    def _cache(self, model: SambaModel) -> EmbeddingCache:
        return EmbeddingCache(model.sam, model.description, self.cfg.encoder_batch_size)

    def fit(
        self, model: nn.Module, data: SiteData, round_config: FlatConfig
    ) -> RoundResult:
        """One round of the run's schedule (:mod:`fedmed.tasks.samba.schedule`)."""
        server_round = int(round_config.get("server-round", 1))
        plan = round_plan(self.cfg, server_round, self.num_rounds)
        if server_round > self.num_rounds:
            logger.warning(
                "round %d is past num-server-rounds = %d: SAMBA's epoch budgets are "
                "spent, nothing trains this round",
                server_round,
                self.num_rounds,
            )
        rng = np.random.default_rng([self.seed, server_round, data.site_id + 1])
        lr = float(round_config.get("lr", self.cfg.lr))
        cache = self._cache(model)
        samples = training_samples(cases_of(data.train), self.cfg, cache)
        epochs = plan.decoder_epochs
        report = train_decoder(model.sam, samples, self.cfg, lr, epochs, rng)
        metrics = {
            "decoder_samples": float(report.num_samples),
            "decoder_epochs": float(report.epochs),
        }
        if report.epochs:
            metrics["decoder_dice_loss"] = report.loss
        if model.voting is not None and plan.train_voting:
            metrics.update(self._fit_voting(model, data, cache, rng))
        if model.localizer is not None and plan.localizer_epochs:
            metrics.update(self._fit_localizer(model, data, rng, plan.localizer_epochs))
        return RoundResult(num_examples=report.num_samples, metrics=metrics)

    def _fit_voting(self, model, data, cache, rng) -> dict[str, float]:
        cfg = self.cfg
        train = [
            voting_item(model, c, cfg, cache, rng, cfg.box_jitter)
            for c in cases_of(data.train)
        ]
        val = [voting_item(model, c, cfg, cache, rng, 0) for c in cases_of(data.val)]
        report = train_voting(model.voting, train, val, cfg, rng, self.device)
        metrics = {
            "voting_dice_loss": report.train_loss,
            "voting_epochs": report.epochs_run,
        }
        if report.val_loss is not None:
            metrics["voting_val_loss"] = report.val_loss
        return metrics

    def _local_localizer_path(self, data: SiteData) -> Path | None:
        cases = cases_of(data.train) or cases_of(data.test)
        if self.cfg.localizer != "local" or not cases:
            return None
        return (
            cache_root(self.cfg, cases[0]) / f"localizer-site{data.site_id}.safetensors"
        )

    def _fit_localizer(self, model, data, rng, epochs: int) -> dict[str, float]:
        from fedmed.tasks.samba.localizer import export_yolo_dataset, train_localizer

        self._restore_local_localizer(model, data)
        with tempfile.TemporaryDirectory(prefix="samba-yolo-") as tmp:
            data_yaml = export_yolo_dataset(
                Path(tmp) / "data",
                cases_of(data.train),
                cases_of(data.val),
                self.cfg,
                rng,
            )
            metrics = train_localizer(
                model.localizer,
                data_yaml,
                self.cfg,
                Path(tmp) / "runs",
                self.seed,
                epochs,
            )
        path = self._local_localizer_path(data)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            state = {
                k: v.detach().cpu().contiguous()
                for k, v in model.localizer.state_dict().items()
            }
            save_file(state, str(path))
        return metrics

    def _restore_local_localizer(self, model: SambaModel, data: SiteData) -> None:
        """A site-local localizer is not exchanged: reload this site's own weights."""
        path = self._local_localizer_path(data)
        if path is not None and path.is_file():
            model.localizer.load_state_dict(load_file(str(path)))

    def _zero_shot_decoder(self) -> nn.Module | None:
        if not self.cfg.eval_zero_shot:
            return None
        return initial_decoder(self.cfg, self.seed).to(self.device)

    def evaluate(self, model: nn.Module, data: SiteData) -> RoundResult:
        if model.localizer is not None:
            self._restore_local_localizer(model, data)
        cases = cases_of(data.test)
        metrics = evaluate_cases(
            model, cases, self.cfg, self._cache(model), self._zero_shot_decoder()
        )
        return RoundResult(num_examples=len(cases), metrics=metrics)

    def heldout_data(self) -> Dataset | None:
        folder = heldout_dir(self.data_dir)
        return CaseDataset(find_cases(folder)) if folder is not None else None

    def evaluate_heldout(self, model: nn.Module, dataset: Dataset) -> dict[str, float]:
        return evaluate_cases(
            model,
            cases_of(dataset),
            self.cfg,
            self._cache(model),
            self._zero_shot_decoder(),
        )

    def synthesize_data(self, out: Path, num_sites: int, seed: int) -> None:
        synthesize(out, num_sites, SYNTH_CASES_PER_SITE, seed=seed, naming="mixed")

    def write_plots(
        self,
        model: nn.Module,
        folder: Path,
        dataset: Dataset | None = None,
        cases: int = 1,
    ) -> list[Path]:
        """Overlay PNGs of every stage's prediction for the first ``cases`` cases.

        ``dataset`` defaults to the held-out set; the run reporter passes its
        run's ``plots/`` folder.
        """
        dataset = dataset if dataset is not None else self.heldout_data()
        stages = stages_for(model, self.cfg, self._zero_shot_decoder())
        cache = self._cache(model)
        paths = []
        for case in cases_of(dataset)[:cases]:
            evaluation = evaluate_case(model, case, self.cfg, cache, stages)
            paths.append(write_overlay(case.load(), evaluation.regions, folder))
        return paths
