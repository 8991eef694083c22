"""Decoder fine-tuning helps on held-out phantoms; SAMBA-mc trains three outputs."""

from __future__ import annotations

import numpy as np

from fedmed.data.brats import find_cases
from fedmed.tasks.samba.data import training_samples
from fedmed.tasks.samba.embedding_cache import EmbeddingCache
from fedmed.tasks.samba.evaluation import evaluate_cases
from fedmed.tasks.samba.model import build_samba_model, initial_decoder
from fedmed.tasks.samba.train import train_decoder


def _fit(cfg, phantoms, epochs):
    model = build_samba_model(cfg, seed=0)
    cache = EmbeddingCache(model.sam, model.description, cfg.encoder_batch_size)
    cases = find_cases(phantoms / "site_0") + find_cases(phantoms / "site_1")
    samples = training_samples(cases, cfg, cache)
    report = train_decoder(
        model.sam, samples, cfg, cfg.lr, epochs, np.random.default_rng(0)
    )
    return model, cache, report


def test_decoder_finetuning_beats_the_untrained_decoder_on_heldout(
    phantoms, tiny_config
):
    # Prepare
    cfg = tiny_config(modalities="flair", voting=False)
    # Execute
    model, cache, report = _fit(cfg, phantoms, epochs=4)
    heldout = find_cases(phantoms / "heldout")
    metrics = evaluate_cases(model, heldout, cfg, cache, initial_decoder(cfg, seed=0))
    # Assert
    assert report.num_samples > 50
    assert report.epoch_losses[-1] < report.epoch_losses[0]
    assert metrics["finetuned_wt_dice"] > metrics["zero_shot_wt_dice"] + 0.2
    assert metrics["finetuned_sam_dice"] > 0.4
    assert metrics["finetuned_wt_hd95"] < metrics["zero_shot_wt_hd95"]


def test_samba_mc_trains_three_outputs_into_three_regions(phantoms, tiny_config):
    # Prepare
    cfg = tiny_config(variant="mc", modalities="t1ce,flair", voting=False)
    # Execute
    model, cache, report = _fit(cfg, phantoms, epochs=1)
    metrics = evaluate_cases(model, find_cases(phantoms / "heldout")[:1], cfg, cache)
    # Assert
    assert np.isfinite(report.loss) and report.loss < 1.0
    for region in ("et", "tc", "wt"):
        assert 0.0 <= metrics[f"finetuned_{region}_dice"] <= 1.0
        assert metrics[f"finetuned_{region}_hd95"] >= 0.0
    assert "zero_shot_wt_dice" not in metrics
