"""Metrics: securely summable statistics match exact metrics; the plot is written."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from fedmed.tasks.vfl_clip.metrics import (
    evaluation_statistics,
    exact_metrics,
    metrics_from_statistics,
    plot_confusion_matrix,
    split_statistics,
)


def _scores(seed: int, n: int = 400):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, n)
    cos = rng.uniform(-0.2, 0.2, (n, 7))
    cos[np.arange(n), labels] += rng.uniform(0.0, 0.15, n)
    return 100.0 * cos, labels


def test_summed_statistics_give_the_pooled_metrics():
    # Prepare: two providers' scores
    (logits_a, labels_a), (logits_b, labels_b) = _scores(0), _scores(1)
    logits = np.concatenate([logits_a, logits_b])
    labels = np.concatenate([labels_a, labels_b])
    # Execute
    summed = evaluation_statistics(
        logits_a, labels_a, 2000, 100.0
    ) + evaluation_statistics(logits_b, labels_b, 2000, 100.0)
    pooled = metrics_from_statistics(summed, 7, 2000)
    # Assert
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    exact_auc = np.mean([roc_auc_score(labels == k, probs[:, k]) for k in range(7)])
    assert abs(pooled["auc"] - exact_auc) < 5e-3
    assert pooled["acc"] == np.mean(probs.argmax(axis=1) == labels)
    assert np.isclose(
        pooled["acc_macro"], balanced_accuracy_score(labels, probs.argmax(axis=1))
    )
    assert np.isclose(exact_metrics(logits, labels)["auc"], exact_auc)


def test_confusion_plot_is_written(tmp_path):
    # Prepare
    logits, labels = _scores(2)
    confusion, _ = split_statistics(
        evaluation_statistics(logits, labels, 10, 100.0), 7, 10
    )
    # Execute
    path = plot_confusion_matrix(
        confusion, [f"class {k}" for k in range(7)], tmp_path / "cm.png", "test"
    )
    # Assert
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert confusion.sum() == len(labels)
