"""Pooled AUC from summed per-site score histograms matches the exact pooled AUC."""

import numpy as np
import pytest

from fedmed.metrics.classification import (
    BINS_PER_CELL,
    EDGE_CELLS,
    HIST_BINS,
    MAX_GROUPS_PER_ROW,
    MIN_CASES,
    accuracy,
    auc_from_histograms,
    classification_statistics,
    histograms_from_groups,
    macro_auc,
    pooled_classification_metrics,
    private_groups,
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


# ------------------------------------------------------ privacy of the statistics
def _released(labels, probs, min_cases=MIN_CASES):
    """Every group a site would release, as (row, first_cell, end_cell, count)."""
    hist = score_histograms(labels, probs).reshape(-1, HIST_BINS)
    return [
        (row, *group)
        for row, counts in enumerate(hist)
        for group in private_groups(counts, min_cases)
    ]


def test_no_released_group_holds_a_single_case_on_a_120_image_site():
    # Prepare: a typical small site, trained model, 7 classes
    labels, probs = _site(np.random.default_rng(2), 120, 7, 2.0)
    rows = score_histograms(labels, probs).reshape(-1, HIST_BINS).sum(axis=1)
    # Execute
    released = _released(labels, probs)
    # Assert: each group has >= MIN_CASES cases, or is a whole small row
    for row, first, end, count in released:
        whole_row = (first, end) == (0, EDGE_CELLS) and count == rows[row]
        assert count >= MIN_CASES or whole_row
    assert sum(c for *_, c in released) == rows.sum() == 120 * 7
    # and the same site with the rule off would expose single cases
    assert any(c == 1 for *_, c in _released(labels, probs, min_cases=1))


def test_released_ranges_never_show_a_case_score_finer_than_a_cell():
    # Prepare: five cases in different bins of one cell
    counts = np.zeros(HIST_BINS, dtype=int)
    np.add.at(counts, [BINS_PER_CELL * 40 + k for k in (0, 1, 1, 2, 3)], 1)
    # Execute / Assert: only "5 cases in cell 40" leaves the site
    assert private_groups(counts) == [(40, 41, 5.0)]


def test_pooled_auc_from_released_groups_costs_under_a_hundredth():
    # Prepare: three 120-image sites with different separation
    rng = np.random.default_rng(3)
    sites = [_site(rng, 120, 7, sep) for sep in (1.0, 1.5, 2.5)]
    labels = np.concatenate([y for y, _ in sites])
    probs = np.concatenate([p for _, p in sites])
    # Execute
    pooled = pooled_classification_metrics(
        [classification_statistics(y, p) for y, p in sites], num_classes=7
    )
    # Assert
    assert abs(pooled["auc"] - macro_auc(labels, probs)) < 0.01
    assert pooled["accuracy"] == pytest.approx(accuracy(labels, probs))


def test_released_groups_of_crowded_scores_keep_their_ranking():
    # Prepare: an untrained binary model, every probability within 0.5 +- 0.02
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    shift = np.where(labels == 1, 0.01, -0.01) + rng.normal(0, 0.005, 400)
    probs = np.stack([0.5 - shift, 0.5 + shift], axis=1)
    # Execute
    pooled = pooled_classification_metrics(
        [classification_statistics(labels, probs)], num_classes=2
    )
    # Assert
    assert abs(pooled["auc"] - macro_auc(labels, probs)) < 0.02


def test_a_row_with_few_cases_reveals_only_its_count():
    # Prepare: 3 positives of class 1 at very different scores
    counts = np.zeros(HIST_BINS, dtype=int)
    counts[[10, 900, 2000]] = 1
    # Execute / Assert: one group, the whole score range
    assert private_groups(counts) == [(0, EDGE_CELLS, 3.0)]


def test_statistics_of_a_large_test_set_stay_small():
    # Prepare: 5,000 test images at one site
    labels, probs = _site(np.random.default_rng(4), 5000, 7, 1.5)
    # Execute
    stats = classification_statistics(labels, probs)
    # Assert: <= 32 groups per (class, label) row, two numbers each
    assert len(stats["score_groups"]) <= 2 * MAX_GROUPS_PER_ROW * 7 * 2
    dense = histograms_from_groups(stats["score_groups"], 7)
    assert dense.sum() == pytest.approx(5000 * 7)


@pytest.mark.parametrize("bad", [[1e12, 3.0], [5.0, -1.0], [float("nan"), 1.0], [3.0]])
def test_malformed_groups_are_refused(bad):
    with pytest.raises(ValueError, match="score group"):
        histograms_from_groups(bad, num_classes=7)
