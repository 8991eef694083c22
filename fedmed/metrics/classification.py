"""Classification metrics, per site and pooled across sites, without per-sample data.

AUC of the pooled data is not the mean of per-site AUCs. To report it, each
site sends per-class histograms of its softmax scores, split by positive /
negative label (the sufficient statistic of a binned ROC); the server adds
them and computes the AUC of the binned scores, which differs from the exact
AUC only through ties inside a bin. Bins are uniform in logit space: an
uncertain model's scores crowd around 0.5 and a confident one's near 0 and 1,
and probability-space bins would merge either into one tie.

A fine histogram of a small test set is a list of its samples: with ~120
images nearly every image would sit alone in its bin. So a site never sends
bins; for each row (class, positive/negative) it sends *groups*
(:func:`private_groups`):

    Rule: the row's cases, in score order, form groups of at least
    ``MIN_CASES`` (5) consecutive cases; a group is released as its count and
    the score range it spans, widened outward to the edges of a 512-cell
    grid (4 bins a cell). A row with fewer than ``MIN_CASES`` cases is
    released as its count over the whole score range.

So no released range ever holds fewer than 5 cases, and the server learns
no case's own score, only that at least 5 of a site's cases scored inside a
range whose edges are fixed grid points. The server spreads each group's
count uniformly over its range before adding sites
(:func:`histograms_from_groups`). The AUC this costs, measured in
``tests/metrics/test_classification.py``: under 0.01 on 120-case sites with
a trained model, under 0.02 for an untrained model whose scores crowd within
0.5 +- 0.02 (the cost of the grid). A reply is bounded too: at most
``MAX_GROUPS_PER_ROW`` groups a row (the minimum group size doubles until it
fits), two numbers a group.

Accuracy travels as correct/total counts. The macro AUC follows MedMNIST's
evaluator: the mean over classes of the one-vs-rest AUC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

HIST_BINS = 2048
LOGIT_RANGE = 12.0  # logits beyond +-12 (p < 6e-6 from 0 or 1) share the end bins
BINS_PER_CELL = 4  # released group ranges snap to this coarser grid
EDGE_CELLS = HIST_BINS // BINS_PER_CELL  # 512 cells
MIN_CASES = 5
MAX_GROUPS_PER_ROW = 32


def macro_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean one-vs-rest AUC over classes that have both positives and negatives."""
    labels = np.asarray(labels).reshape(-1)
    aucs = []
    for cls in range(probs.shape[1]):
        positives = labels == cls
        if positives.any() and (~positives).any():
            aucs.append(roc_auc_score(positives, probs[:, cls]))
    return float(np.mean(aucs)) if aucs else float("nan")


def accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Top-1 accuracy."""
    return float((probs.argmax(axis=1) == np.asarray(labels).reshape(-1)).mean())


def score_bins(probs: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Bin index of each probability, uniform in logit space over +-LOGIT_RANGE."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0 - 1e-12)
    logits = np.log(p) - np.log1p(-p)
    scaled = (logits + LOGIT_RANGE) / (2 * LOGIT_RANGE) * bins
    return np.clip(np.floor(scaled).astype(int), 0, bins - 1)


def score_histograms(
    labels: np.ndarray, probs: np.ndarray, bins: int = HIST_BINS
) -> np.ndarray:
    """Per class, histograms of its score over positives and negatives: (C, 2, bins)."""
    labels = np.asarray(labels).reshape(-1)
    num_classes = probs.shape[1]
    idx = score_bins(probs, bins)
    hist = np.zeros((num_classes, 2, bins), dtype=np.float64)
    for cls in range(num_classes):
        positive = labels == cls
        hist[cls, 0] = np.bincount(idx[positive, cls], minlength=bins)
        hist[cls, 1] = np.bincount(idx[~positive, cls], minlength=bins)
    return hist


def auc_from_histograms(hist: np.ndarray) -> float:
    """Macro one-vs-rest AUC from summed (C, 2, bins) histograms (ties count 1/2)."""
    aucs = []
    for pos, neg in hist:
        n_pos, n_neg = pos.sum(), neg.sum()
        if n_pos == 0 or n_neg == 0:
            continue
        neg_below = np.cumsum(neg) - neg
        wins = (pos * (neg_below + 0.5 * neg)).sum()
        aucs.append(wins / (n_pos * n_neg))
    return float(np.mean(aucs)) if aucs else float("nan")


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy, macro AUC and cross-entropy of predicted scores."""
    picked = probs[np.arange(len(labels)), labels]
    return {
        "accuracy": accuracy(labels, probs),
        "auc": macro_auc(labels, probs),
        "loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
    }


def private_groups(
    counts: np.ndarray, min_cases: int = MIN_CASES
) -> list[tuple[int, int, float]]:
    """One row's cases as groups ``(first_cell, end_cell, count)`` of the edge grid.

    Groups are runs of ``min_cases`` consecutive cases in score order (the
    last run takes the remainder); each spans the grid cells from the one
    holding its lowest case to the one holding its highest. A row with fewer
    than ``min_cases`` cases is one group over every cell.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size != HIST_BINS or (counts < 0).any():
        raise ValueError(f"expected {HIST_BINS} non-negative bin counts")
    cases = np.repeat(np.arange(HIST_BINS), counts) // BINS_PER_CELL
    if cases.size == 0:
        return []
    if cases.size < min_cases:
        return [(0, EDGE_CELLS, float(cases.size))]
    starts = list(range(0, cases.size - min_cases + 1, min_cases))
    ends = [*starts[1:], cases.size]
    return [
        (int(cases[a]), int(cases[b - 1]) + 1, float(b - a))
        for a, b in zip(starts, ends, strict=True)
    ]


def bounded_groups(counts: np.ndarray) -> list[tuple[int, int, float]]:
    """:func:`private_groups` with the group size doubled until the row fits.

    Keeps an evaluation reply small whatever the test-set size: at most
    :data:`MAX_GROUPS_PER_ROW` groups per row.
    """
    min_cases = MIN_CASES
    while len(found := private_groups(counts, min_cases)) > MAX_GROUPS_PER_ROW:
        min_cases *= 2
    return found


def score_groups(labels: np.ndarray, probs: np.ndarray) -> list[float]:
    """Released groups of every (class, label) row as flat ``[key, count, ...]``.

    ``key = (row * (EDGE_CELLS + 1) + first_cell) * (EDGE_CELLS + 1) + end_cell``
    with ``row = 2 * class + (0 positives | 1 negatives)``: an exact integer in
    a float, so the statistic fits a Flower MetricRecord as one list.
    """
    hist = score_histograms(labels, probs).reshape(-1, HIST_BINS)
    flat: list[float] = []
    for row, counts in enumerate(hist):
        for first, end, count in bounded_groups(counts):
            key = (row * (EDGE_CELLS + 1) + first) * (EDGE_CELLS + 1) + end
            flat += [float(key), count]
    return flat


def histograms_from_groups(flat: list[float], num_classes: int) -> np.ndarray:
    """Dense ``(C, 2, bins)`` histograms, each group spread over its range."""
    values = np.asarray(flat, dtype=np.float64)
    if values.size % 2 or not np.isfinite(values).all() or (values[1::2] < 0).any():
        raise ValueError(
            "score groups must come as [key, count] pairs of finite numbers with "
            "counts >= 0"
        )
    dense = np.zeros((2 * num_classes, HIST_BINS))
    for key, count in values.reshape(-1, 2):
        rest, end = divmod(int(key), EDGE_CELLS + 1)
        row, first = divmod(rest, EDGE_CELLS + 1)
        if not (0 <= row < 2 * num_classes and 0 <= first < end <= EDGE_CELLS):
            raise ValueError(
                f"score group key {int(key)} is outside {num_classes} classes x "
                f"{EDGE_CELLS} cells; the site sent statistics of another model"
            )
        lo, hi = first * BINS_PER_CELL, end * BINS_PER_CELL
        dense[row, lo:hi] += count / (hi - lo)
    return dense.reshape(num_classes, 2, HIST_BINS)


def classification_statistics(
    labels: np.ndarray, probs: np.ndarray
) -> dict[str, list[float]]:
    """What a site sends for pooled AUC and accuracy (no per-sample values)."""
    correct = float((probs.argmax(axis=1) == labels).sum())
    return {
        "score_groups": score_groups(labels, probs),
        "correct_total": [correct, float(len(labels))],
    }


def dense_classification_statistics(
    statistics: Mapping[str, list[float]] | None, num_classes: int
) -> dict[str, list[float]]:
    """A site's statistics in a fixed dense layout that sums element-wise.

    Secure aggregation adds vectors, so a site releases its groups spread
    over the edge grid's cells, ``(C, 2, EDGE_CELLS)`` as ``score_cells``,
    and ``correct_total``; ``None`` (nothing to report) gives zeros of the
    same layout. The groups keep their rule (no range with fewer than
    ``MIN_CASES`` cases) even against the other sites of a sum.
    """
    cells = np.zeros((num_classes, 2, EDGE_CELLS))
    correct_total = [0.0, 0.0]
    if statistics:
        hist = histograms_from_groups(statistics["score_groups"], num_classes)
        cells = hist.reshape(num_classes, 2, EDGE_CELLS, BINS_PER_CELL).sum(axis=-1)
        correct_total = [float(v) for v in statistics["correct_total"]]
    return {"score_cells": cells.reshape(-1).tolist(), "correct_total": correct_total}


def _site_histograms(statistics: Mapping[str, list[float]], num_classes: int):
    """``(C, 2, HIST_BINS)`` from released groups or from dense (summed) cells."""
    if "score_cells" not in statistics:
        return histograms_from_groups(statistics["score_groups"], num_classes)
    cells = np.asarray(statistics["score_cells"], dtype=np.float64)
    if cells.size != num_classes * 2 * EDGE_CELLS or not np.isfinite(cells).all():
        raise ValueError(
            f"score_cells must hold {num_classes * 2 * EDGE_CELLS} finite counts "
            f"({num_classes} classes x 2 x {EDGE_CELLS} cells), found {cells.size}"
        )
    spread = np.repeat(cells.reshape(num_classes, 2, EDGE_CELLS), BINS_PER_CELL, -1)
    return spread / BINS_PER_CELL


def pooled_classification_metrics(
    site_statistics: Sequence[Mapping[str, list[float]]], num_classes: int
) -> dict[str, float]:
    """Pooled AUC and accuracy from every site's :func:`classification_statistics`
    or from dense statistics (:func:`dense_classification_statistics`), e.g. one
    securely summed over all sites."""
    hist = sum(_site_histograms(s, num_classes) for s in site_statistics)
    correct = sum(float(s["correct_total"][0]) for s in site_statistics)
    total = sum(float(s["correct_total"][1]) for s in site_statistics)
    return {"auc": auc_from_histograms(hist), "accuracy": correct / max(total, 1.0)}
