"""SeLoRA as a federated task: self-expanding adapters with heterogeneous-rank FedAvg.

Sites fine-tune the same frozen Stable Diffusion with SeLoRA adapters; each
site's ranks grow on its own data, so replies differ in shape. The task
therefore overrides the server hooks: :meth:`SeLoRATask.validate_update`
accepts per-layer rank growth (consistent A (r, in) / B (out, r), finite,
known keys) and :meth:`SeLoRATask.aggregate` averages in product space and
re-factorises by truncated SVD (or zero-pads, for comparison);
:meth:`SeLoRATask.aggregation_report` then says how much of the exact mean
update the aggregate lost. A site loads an aggregate of any rank by resizing
its layers first; ``fit`` builds a fresh optimizer every round. The final
adapters leave a run as peft folders and a diffusers LoRA file
(:meth:`SeLoRATask.write_artifacts`). Baselines (LoRA, DyLoRA, AdaLoRA) run
through the same task with ``selora.method``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn
from torch.utils.data import Dataset

from fedmed.comm.selection import load_state, trainable_state
from fedmed.config import FlatConfig
from fedmed.data.cxr_reports import ReportImageDataset
from fedmed.data.sites import heldout_dir, locate_site
from fedmed.data.synth_cxr import REPORT_WORDS, synthesize
from fedmed.tasks.base import RoundResult, SiteData, Task
from fedmed.tasks.registry import register_task
from fedmed.tasks.selora.aggregation import (
    aggregate_product_space,
    aggregate_zero_padded,
    check_lora_state,
    lora_pairs,
    measure_aggregate,
    state_ranks,
)
from fedmed.tasks.selora.config import SeLoRAConfig
from fedmed.tasks.selora.data import limit, load_pairs, site_splits
from fedmed.tasks.selora.evaluation import evaluate_generation
from fedmed.tasks.selora.export import export_adapters
from fedmed.tasks.selora.layer import lora_layers, resize_layer
from fedmed.tasks.selora.model import build_diffusion_model, trainable_summary
from fedmed.tasks.selora.plots import plot_rank_heatmap
from fedmed.tasks.selora.train import fit_local, validation_loss

DEFAULT_DATA_DIR = "data/cxr-reports"


@register_task
class SeLoRATask(Task):
    """Text-to-chest-X-ray Stable Diffusion fine-tuned with self-expanding LoRA."""

    name = "selora"
    config_class = SeLoRAConfig
    aggregation = "custom"  # growing ranks, product-space SVD
    #: Adapters inside the U-Net and text encoder stay private to each site.
    frozen_parts = ("unet", "text_encoder", "vae", "tokenizer")
    writes_artifacts = True  # peft folders and a diffusers LoRA file

    default_data_dir = DEFAULT_DATA_DIR

    def __init__(self, cfg: SeLoRAConfig, run_config: FlatConfig) -> None:
        super().__init__(cfg, run_config)
        self._report: dict[str, float] = {}

    @property
    def resizable(self) -> bool:
        """Only SeLoRA adapters change rank; the baselines keep fixed shapes."""
        return self.cfg.method == "selora"

    def build_model(self) -> nn.Module:
        return build_diffusion_model(self.cfg, self.seed, REPORT_WORDS)

    def exchanged(self, model: nn.Module) -> dict[str, Tensor]:
        return trainable_state(model)

    def load_exchanged(self, model: nn.Module, state: Mapping[str, Tensor]) -> None:
        """Validate, resize SeLoRA layers to the aggregate's ranks, then copy."""
        current = self.exchanged(model)
        if not self.resizable:
            load_state(model, state, current)
            return
        check_lora_state(state, current, "aggregate", self.cfg.max_rank)
        layers = lora_layers(model)
        for layer_name, rank in state_ranks(state).items():
            resize_layer(layers[layer_name], rank)
        load_state(model, state, self.exchanged(model))

    def validate_update(
        self, update: Mapping[str, Tensor], reference: Mapping[str, Tensor]
    ) -> None:
        """Per-layer rank growth is legal for SeLoRA; shapes must stay consistent."""
        if not self.resizable:
            super().validate_update(update, reference)
            return
        check_lora_state(
            update,
            reference,
            "site update",
            self.cfg.max_rank,
            min_ranks=state_ranks(reference),
        )

    def aggregate(
        self, states: list[Mapping[str, Tensor]], weights: list[float]
    ) -> dict[str, Tensor]:
        """Product-space SVD (or zero-padding) per LoRA layer; AdaLoRA: plain mean.

        What the aggregate lost against the exact mean update is kept for
        :meth:`aggregation_report`.
        """
        self._report = {}
        if self.cfg.method == "adalora" or not lora_pairs(states[0]):
            return super().aggregate(states, weights)
        if self.cfg.aggregation == "zero-pad":
            aggregate = aggregate_zero_padded(states, weights)
        else:
            aggregate = aggregate_product_space(
                states,
                weights,
                self.cfg.aggregate_rank,
                self.cfg.energy,
                seed=self.seed,
                max_rank=self.cfg.max_rank,
            )
        self._report = measure_aggregate(states, weights, aggregate)
        return aggregate

    def aggregation_report(self) -> dict[str, float]:
        """Relative error of the last aggregate against the exact mean ΔW, mean rank.

        See :func:`fedmed.tasks.selora.aggregation.measure_aggregate`; empty
        before the first aggregate and for AdaLoRA's plain mean.
        """
        return dict(self._report)

    def site_data(self, node_config: FlatConfig) -> SiteData:
        where = locate_site(self.data_dir, node_config)
        return site_splits(
            where.folder,
            self.cfg,
            where.site_id,
            self.seed,
            where.partition,
            where.num_partitions,
        )

    def fit(
        self, model: nn.Module, data: SiteData, round_config: FlatConfig
    ) -> RoundResult:
        server_round = int(round_config.get("server-round", 1))
        lr = float(round_config["lr"]) if "lr" in round_config else None
        stats = fit_local(
            model,
            data.train,
            self.cfg,
            self.seed + 1000 * data.site_id + server_round,
            lr,
        )
        ranks = list(stats.ranks.values()) or [0]
        metrics = {
            "loss": stats.loss,
            "steps": float(stats.steps),
            "expansions": float(stats.expansions),
            "mean_rank": sum(ranks) / len(ranks),
            "max_rank": float(max(ranks)),
            "trainable_params": float(trainable_summary(model)["trainable_params"]),
        }
        return RoundResult(num_examples=data.num_train, metrics=metrics)

    def evaluate(self, model: nn.Module, data: SiteData) -> RoundResult:
        loss = validation_loss(model, data.test, self.cfg.eval_batch_size, self.seed)
        return RoundResult(num_examples=len(data.test), metrics={"loss": loss})

    def heldout_data(self) -> Dataset | None:
        folder = heldout_dir(self.data_dir)
        if folder is None:
            return None
        return ReportImageDataset(load_pairs(folder, self.cfg), self.cfg.resolution)

    def evaluate_heldout(self, model: nn.Module, dataset: Dataset) -> dict[str, float]:
        """Validation MSE; with ``generation-eval`` also FID and CLIP score."""
        subset = limit(dataset, self.cfg.eval_samples)
        metrics = {
            "loss": validation_loss(model, subset, self.cfg.eval_batch_size, self.seed)
        }
        if self.cfg.generation_eval:
            metrics.update(evaluate_generation(model, subset, self.cfg))
        return metrics

    def synthesize_data(self, out: Path, num_sites: int, seed: int) -> None:
        synthesize(out, num_sites, seed, size=max(64, self.cfg.resolution))

    def write_rank_heatmap(self, state: Mapping[str, Tensor], folder: Path) -> Path:
        """Heatmap of the per-layer ranks of an exchanged state (e.g. the aggregate)."""
        return plot_rank_heatmap(state_ranks(state), folder)

    def write_plots(self, model: nn.Module, folder: Path) -> list[Path]:
        """The rank heatmap of the final aggregate (which layers grew)."""
        return [self.write_rank_heatmap(self.exchanged(model), folder)]

    def write_artifacts(self, model: nn.Module, folder: Path) -> list[Path]:
        """The adapters as peft folders and a diffusers file, grown ranks included.

        Written to ``folder/peft/<component>/``, ``folder/diffusers/`` and
        ``folder/ranks.json`` (see :mod:`fedmed.tasks.selora.export`).
        """
        return export_adapters(model, self.cfg, folder)
