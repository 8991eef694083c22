"""Classification metrics, per site and pooled across sites.

AUC of the pooled data is not the mean of per-site AUCs. To report it
without moving per-sample scores off a site, each site sends per-class
histograms of its softmax scores, split by positive/negative label (the
sufficient statistic of a binned ROC); the server sums them and computes the
AUC of the binned scores, which differs from the exact AUC only through ties
inside a bin. Bins are uniform in logit space (width ``2 * LOGIT_RANGE /
bins``): an uncertain model's scores crowd around 0.5 and a confident one's
near 0 and 1, and probability-space bins would merge either into one tie.
Accuracy travels as correct/total counts.
The macro AUC follows MedMNIST's evaluator: the mean over classes of the
one-vs-rest AUC.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

HIST_BINS = 2400
LOGIT_RANGE = 12.0  # logits beyond +-12 (p < 6e-6 from 0 or 1) share the end bins


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


def classification_statistics(
    labels: np.ndarray, probs: np.ndarray
) -> dict[str, list[float]]:
    """Sufficient statistics the server sums into pooled accuracy and AUC."""
    correct = float((probs.argmax(axis=1) == labels).sum())
    return {
        "score_hist": score_histograms(labels, probs).reshape(-1).tolist(),
        "correct_total": [correct, float(len(labels))],
    }
