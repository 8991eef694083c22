"""The task contract: what every federated method in fedmed provides.

A task is one published method (or the classification baseline) packaged so
that the same ClientApp, ServerApp, simulation and baselines can run it
without knowing which method it is. Its folder holds ``config.py`` (frozen
dataclass of the paper's defaults), ``model.py``, ``data.py``, ``train.py``
and ``task.py`` (the :class:`Task` subclass, registered by name).

Contract
--------
``from_run_config(run_config)``
    Parse and validate the task's keys (prefix ``<name>.``) and the platform
    keys (:class:`fedmed.config.PlatformConfig`: seed, data folder,
    partitioner, rounds) once; unknown keys and bad values raise
    :class:`fedmed.config.ConfigError`. The task reads platform values from
    ``self.platform``, never from the raw run config.
``build_model()``
    Frozen backbone plus trainable parts, deterministic for a given seed so
    that every site starts from the same weights.
``exchanged(model)``
    Exactly the tensors that leave a site: a flat ``str -> Tensor`` mapping,
    the same keys on every site. No frozen backbone tensor may appear here;
    a contract test over the registry checks this for every task.
``load_exchanged(model, state)``
    Apply an aggregate. Rejects (``ValueError``) missing or extra keys, wrong
    shapes and non-finite values before touching the model.
``site_data(node_config)``
    That site's train / val / test split, found from the node config
    (``partition-id`` + ``num-partitions`` in simulation, ``data-dir`` in a
    deployment).
``fit(model, data, round_config)`` / ``evaluate(model, data)``
    Pure-torch local work returning a :class:`RoundResult`; ``num_examples``
    is the weight of the server-side average.
``heldout_data()``
    The global held-out test set, evaluated centrally on the aggregate when
    available (simulation and benchmarks), else ``None``.
``validate_update(update, reference)`` / ``aggregate(states, weights)``
    Server-side hooks the strategy calls: reject a malformed reply, and
    combine the accepted ones. Defaults: exact key/shape/finite check against
    the arrays sent, and the example-weighted mean. A task whose sites may
    legitimately reply with other shapes (SeLoRA's growing ranks) overrides
    both and declares ``aggregation = "custom"``.
``aggregation``
    How the task combines updates, declared: ``"mean"`` (same-shaped
    updates, the example-weighted mean: secure aggregation and central DP
    apply) or ``"custom"`` (anything else: both are refused).
``frozen_parts`` / ``model_key()``
    Declared frozen part of the model: attribute paths of submodules no site
    trains (``""`` is the whole model; its frozen tensors only). A process
    serving many messages builds the model once per ``model_key()`` and
    shares those tensors between the private models it hands out
    (:mod:`fedmed.tasks.backbones`); nothing a site trains is shared.
``synthesize_data(out, num_sites, seed)``
    Write synthetic data in the task's real on-disk format, one folder per
    site (``out/site_<k>/``) plus ``out/heldout/``, so every pipeline runs on a
    fresh machine. ``data_dir`` is where ``site_data`` reads from.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from torch import Tensor, nn
from torch.utils.data import ConcatDataset, Dataset

from fedmed.comm.aggregation import weighted_mean
from fedmed.comm.selection import validate_state
from fedmed.config import FlatConfig, PlatformConfig, parse_platform, parse_section


@dataclass
class SiteData:
    """One site's local data, already split. ``val`` may be empty-free ``None``."""

    site_id: int
    train: Dataset
    test: Dataset
    val: Dataset | None = None

    @property
    def num_train(self) -> int:
        return len(self.train)  # type: ignore[arg-type]


@dataclass
class RoundResult:
    """What one local fit or evaluation produced.

    ``metrics`` are scalars safe to send (loss, accuracy, ...). ``statistics``
    are per-site sufficient statistics (e.g. coarsened score histograms) that
    the server combines into pooled metrics such as AUC, instead of averaging
    per-site AUCs, which is not the AUC of the pooled data. They must not
    reveal single samples.
    """

    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    statistics: dict[str, list[float]] = field(default_factory=dict)


class Task(ABC):
    """A federated method: its model, what leaves a site, and local training."""

    name: ClassVar[str]
    #: Frozen dataclass of the task's run-config keys (prefix ``<name>.``); the
    #: pyproject declaration of every key is generated from it.
    config_class: ClassVar[type]
    #: Where site data lives when the run config has no ``data-dir``.
    default_data_dir: ClassVar[str] = "data"
    #: ``horizontal``: sites train the same model, FedAvg merges (the default).
    #: ``vertical``: sites hold different parts of each sample; the task ships
    #: its own orchestration (VFL-CLIP).
    federation: ClassVar[Literal["horizontal", "vertical"]] = "horizontal"
    #: ``mean``: sites reply with the shapes they received and ``aggregate`` is
    #: the example-weighted mean (what secure aggregation and central DP
    #: compute). ``custom``: anything else (SeLoRA's growing ranks).
    aggregation: ClassVar[Literal["mean", "custom"]] = "mean"
    #: Every training metric the task's ``fit`` may report. Under secure
    #: aggregation each site masks one value and weight slot per name, every
    #: round, zeros where it has nothing, so the layout never shows which
    #: site reported what; a metric not declared here stays on the site.
    train_metric_names: ClassVar[tuple[str, ...]] = ("train_loss",)
    #: The same for ``evaluate``'s metrics (securely summed as weighted means).
    evaluate_metric_names: ClassVar[tuple[str, ...]] = ("loss",)
    #: True when the task's own orchestration always sums site values under
    #: secure aggregation, whatever ``secure-aggregation`` says (VFL-CLIP).
    always_secure_aggregation: ClassVar[bool] = False
    #: Attribute paths of the model's frozen submodules, shared by every site a
    #: process serves (``""``: every frozen tensor of the model), and of
    #: read-only helpers that are not modules (a tokenizer). Empty: the model
    #: is rebuilt for every message.
    frozen_parts: ClassVar[tuple[str, ...]] = ()
    #: True when :meth:`write_artifacts` writes files (SeLoRA's adapters): a
    #: run then exports its final round into ``<run>/adapters/``.
    writes_artifacts: ClassVar[bool] = False

    def __init__(self, cfg: Any, platform: PlatformConfig) -> None:
        """Keep the parsed section and the run's parsed platform keys."""
        self.cfg = cfg
        self.platform = platform
        self.seed = platform.seed
        self._data_dir = Path(platform.data_dir)

    @classmethod
    def from_run_config(cls, run_config: FlatConfig) -> Self:
        """Parse this task's keys (prefix ``<name>.``) and the platform keys once.

        ``default_data_dir`` applies when the run config names no ``data-dir``.
        """
        platform = parse_platform(run_config, data_dir=cls.default_data_dir)
        return cls(parse_section(cls.config_class, run_config, cls.name), platform)

    @abstractmethod
    def build_model(self) -> nn.Module:
        """Build the frozen backbone plus trainable parts (same on every site)."""

    def model_key(self) -> tuple[str, str, int]:
        """Everything ``build_model()`` depends on: equal keys, identical models.

        A task whose model depends on more than its config section and seed
        (files it reads, the device) adds that here.
        """
        return (self.name, repr(self.cfg), self.seed)

    @abstractmethod
    def exchanged(self, model: nn.Module) -> dict[str, Tensor]:
        """Return exactly the tensors that leave the site."""

    @abstractmethod
    def load_exchanged(self, model: nn.Module, state: Mapping[str, Tensor]) -> None:
        """Apply an aggregate after validating keys, shapes and finiteness."""

    @abstractmethod
    def site_data(self, node_config: FlatConfig) -> SiteData:
        """Load this site's train / val / test split."""

    @abstractmethod
    def fit(
        self, model: nn.Module, data: SiteData, round_config: FlatConfig
    ) -> RoundResult:
        """Train locally for one round; return metrics and the example count."""

    @abstractmethod
    def evaluate(self, model: nn.Module, data: SiteData) -> RoundResult:
        """Evaluate on the site's test split."""

    def heldout_data(self) -> Dataset | None:
        """Global held-out test set for central evaluation, if one is configured."""
        return None

    def evaluate_heldout(self, model: nn.Module, dataset: Dataset) -> dict[str, float]:
        """Evaluate the aggregate on the held-out set (exact pooled metrics)."""
        raise NotImplementedError(f"task {self.name!r} has no held-out evaluation")

    def validate_update(
        self, update: Mapping[str, Tensor], reference: Mapping[str, Tensor]
    ) -> None:
        """Raise ``UpdateRejected`` if a site's reply cannot be aggregated."""
        validate_state(reference, update, source="site update")

    def aggregate(
        self, states: list[Mapping[str, Tensor]], weights: list[float]
    ) -> dict[str, Tensor]:
        """Combine accepted site states; default is the example-weighted mean."""
        return weighted_mean(states, weights)

    def pooled_metrics(
        self, site_statistics: Sequence[Mapping[str, list[float]]]
    ) -> dict[str, float]:
        """Metrics of the pooled test data from every site's ``statistics``.

        The task combines what its sites sent (summed histograms, counts); the
        statistics themselves must reveal nothing per sample
        (:mod:`fedmed.metrics.classification` states the rule).
        """
        return {}

    def secure_statistics(
        self, statistics: Mapping[str, list[float]] | None
    ) -> dict[str, list[float]]:
        """``statistics`` in a fixed dense layout that sums element-wise.

        Under secure aggregation every site masks this (zeros of the same
        layout for ``None``) and the server calls :meth:`pooled_metrics`
        with the one summed mapping. Default: no statistics.
        """
        return {}

    @property
    def data_dir(self) -> Path:
        """Folder this task reads site data from (run-config key ``data-dir``)."""
        return self._data_dir

    def full_model_params(self, model: nn.Module) -> int:
        """Parameters a site would send if it exchanged the whole model.

        The reference for every "adapter bytes / full bytes" ratio. Tasks whose
        ``build_model`` leaves out a frozen backbone (FPT with preloaded
        key/value maps) add the backbone back here.
        """
        return sum(p.numel() for p in model.parameters())

    def write_plots(self, model: nn.Module, folder: Path) -> list[Path]:
        """Task-specific figures of a trained model (overlays, rank maps) as PNGs.

        Called by the run reporter with the final aggregate loaded into
        ``model``; the generic metric and byte plots need nothing from here.
        """
        return []

    def write_artifacts(self, model: nn.Module, folder: Path) -> list[Path]:
        """Files a user takes away from a trained model, written under ``folder``.

        Adapters in the formats users' own tools load (SeLoRA: peft folders and
        a diffusers LoRA file). Called by the run reporter with the final
        aggregate loaded into ``model`` (``runs/<name>/adapters/``) and by
        ``fedmed.export.export_run`` for any checkpoint. Default: nothing.
        """
        return []

    def aggregation_report(self) -> dict[str, float]:
        """Scalar diagnostics of the last :meth:`aggregate` call, e.g. what it lost.

        The strategy merges them into the round's aggregated train metrics
        right after calling ``aggregate``. Default: none (the example-weighted
        mean is exact).
        """
        return {}

    def synthesize_data(self, out: Path, num_sites: int, seed: int) -> None:
        """Write synthetic data in the real format for ``num_sites`` sites."""
        raise NotImplementedError(f"task {self.name!r} has no synthetic data generator")

    def baseline_sites(self, num_sites: int) -> list[SiteData]:
        """The sites whose data the local and pooled baselines train on.

        Every simulated site's by default; a task whose federation has sites
        without training data (VFL-CLIP's knowledge provider) leaves them out.
        """
        return [
            self.site_data({"partition-id": k, "num-partitions": num_sites})
            for k in range(num_sites)
        ]

    def pool(self, sites: list[SiteData]) -> SiteData:
        """Union of several sites' data: the centralised ("pooled") baseline."""
        vals = [s.val for s in sites if s.val is not None]
        return SiteData(
            site_id=-1,
            train=ConcatDataset([s.train for s in sites]),
            test=ConcatDataset([s.test for s in sites]),
            val=ConcatDataset(vals) if vals else None,
        )
