"""Pooled AUC from summed per-site score histograms matches the exact pooled AUC."""

import numpy as np

from fedmed.metrics.classification import (
    auc_from_histograms,
    macro_auc,
    score_bins,
    score_histograms,
)


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _site(rng, n, classes, separation, spread=1.0):
    labels = rng.integers(0, classes, n)
    logits = rng.normal(0, spread, (n, classes))
    logits[np.arange(n), labels] += separation
    return labels, _softmax(logits)


def test_summed_site_histograms_give_the_pooled_auc():
    rng = np.random.default_rng(0)
    sites = [_site(rng, 300, 7, 1.0) for _ in range(3)]
    pooled = auc_from_histograms(sum(score_histograms(y, p) for y, p in sites))
    labels = np.concatenate([y for y, _ in sites])
    probs = np.concatenate([p for _, p in sites])
    exact = macro_auc(labels, probs)
    assert 0.6 < exact < 0.95
    assert abs(pooled - exact) < 0.005


def test_scores_crowded_near_one_half_keep_their_ranking():
    # An almost untrained binary model: every probability within 0.5 +- 0.02.
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    shift = np.where(labels == 1, 0.01, -0.01) + rng.normal(0, 0.005, 400)
    probs = np.stack([0.5 - shift, 0.5 + shift], axis=1)
    exact = macro_auc(labels, probs)
    assert exact > 0.95
    assert abs(auc_from_histograms(score_histograms(labels, probs)) - exact) < 0.02


def test_confident_scores_near_zero_and_one_are_not_merged():
    labels = np.array([0, 0, 1, 1])
    positive = np.array([1e-5, 1e-4, 1 - 1e-4, 1 - 1e-5])
    probs = np.stack([1 - positive, positive], axis=1)
    bins = score_bins(positive)
    assert len(set(bins.tolist())) == 4
    assert auc_from_histograms(score_histograms(labels, probs)) == 1.0
