"""SAMBA's evaluation: Dice and HD95 per ET / TC / WT, as in the paper's Table 2.

Stages (metric-name prefixes):

* ``zero_shot``: SAM as built (the stock decoder, no fine-tuning), reference
  boxes, majority vote across modalities and views;
* ``finetuned``: the current decoder with reference boxes (tumour extent or
  brain extent), fused by the voting network when it is enabled;
* ``yolo``: the current decoder prompted by the localizer's boxes instead,
  plus ``yolo_slice_accuracy`` (tumour / no-tumour slices told apart).

Per stage: ``<stage>_<region>_dice`` / ``_hd95`` for the regions the stage
produces (binary SAMBA without voting gives WT only) and ``<stage>_sam_dice``,
the whole-tumour Dice of each SAM mask volume averaged over modalities and
views. Values are means over cases, so averaging sites weighted by their
number of test cases gives the mean over all cases.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from fedmed.data.brats import BratsCase, BratsVolume, region_masks
from fedmed.metrics.segmentation import dice, hd95
from fedmed.tasks.samba.config import SambaConfig
from fedmed.tasks.samba.embedding_cache import EmbeddingCache
from fedmed.tasks.samba.inference import (
    majority_regions,
    reference_boxes,
    sam_volumes,
    voting_regions,
    yolo_boxes,
)
from fedmed.tasks.samba.model import SambaModel


@dataclass(frozen=True)
class Stage:
    """One evaluated pipeline: which decoder, which boxes, which fusion."""

    name: str
    decoder: nn.Module
    yolo: bool = False
    voting: bool = False


@dataclass
class CaseEvaluation:
    """Metrics of one case and the predicted regions per stage (for overlays)."""

    metrics: dict[str, float] = field(default_factory=dict)
    regions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def stages_for(
    model: SambaModel, cfg: SambaConfig, zero_shot_decoder: nn.Module | None
) -> list[Stage]:
    """The stages this configuration can evaluate."""
    voting = model.voting is not None
    stages = []
    if zero_shot_decoder is not None:
        stages.append(Stage("zero_shot", zero_shot_decoder))
    stages.append(Stage("finetuned", model.sam.mask_decoder, voting=voting))
    if model.localizer is not None:
        stages.append(Stage("yolo", model.sam.mask_decoder, yolo=True, voting=voting))
    return stages


def region_scores(
    prefix: str, predicted: dict[str, np.ndarray], volume: BratsVolume
) -> dict[str, float]:
    """Dice and HD95 of each predicted region against the reference labels."""
    truth = region_masks(volume.labels)
    scores = {}
    for region, mask in predicted.items():
        scores[f"{prefix}_{region}_dice"] = dice(mask, truth[region])
        scores[f"{prefix}_{region}_hd95"] = hd95(mask, truth[region], volume.spacing)
    return scores


def evaluate_case(
    model: SambaModel,
    case: BratsCase,
    cfg: SambaConfig,
    cache: EmbeddingCache,
    stages: Sequence[Stage],
) -> CaseEvaluation:
    """Run every stage on one case."""
    volume = case.load()
    result = CaseEvaluation()
    pairs = [(m, v) for m in cfg.modality_list for v in cfg.view_list]
    reference = reference_boxes(volume, cfg)
    whole_tumour = volume.labels > 0
    for stage in stages:
        boxes = reference
        if stage.yolo:
            boxes, correct, total = yolo_boxes(model.localizer, volume, cfg)
            result.metrics["yolo_slice_accuracy"] = correct / max(total, 1)
        volumes = sam_volumes(
            model, stage.decoder, case, volume, cfg, cache, boxes, pairs
        )
        if stage.voting:
            regions = voting_regions(model, volume, volumes, cfg)
        else:
            regions = majority_regions(volumes, cfg)
        result.regions[stage.name] = regions
        result.metrics.update(region_scores(stage.name, regions, volume))
        result.metrics[f"{stage.name}_sam_dice"] = float(
            np.mean([dice(v.any(axis=0), whole_tumour) for v in volumes.values()])
        )
    return result


def evaluate_cases(
    model: SambaModel,
    cases: Sequence[BratsCase],
    cfg: SambaConfig,
    cache: EmbeddingCache,
    zero_shot_decoder: nn.Module | None = None,
) -> dict[str, float]:
    """Mean over cases of every stage's metrics (see the module docstring)."""
    stages = stages_for(model, cfg, zero_shot_decoder)
    collected: dict[str, list[float]] = defaultdict(list)
    for case in cases:
        for name, value in evaluate_case(
            model, case, cfg, cache, stages
        ).metrics.items():
            collected[name].append(value)
    return {name: float(np.mean(values)) for name, values in collected.items()}
