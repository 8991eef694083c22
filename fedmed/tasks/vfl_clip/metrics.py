"""VFL-CLIP metrics: AUC and ACC (plain and macro), exact and from secure sums.

The paper reports MedMNIST's metrics (Sec. IV-C): AUC = mean over classes of
the one-vs-rest ROC AUC, ACC = top-1 accuracy, plus macro averages. Here
``acc_macro`` is the mean per-class recall (balanced accuracy).

Federated evaluation never moves per-sample scores. Each image provider
scores its own test embeddings and turns them into sufficient statistics:

* the confusion matrix (C x C counts): ACC, macro ACC and the plot;
* per class ``k``, histograms of the one-vs-rest log-odds
  ``z_k = logit_k - logsumexp_{j != k} logit_j`` for positives and negatives.
  Logits are ``s * cos`` with CLIP's logit scale ``s``, so ``z_k`` always lies
  in ``[-R, R]``, ``R = 2 s + log C``: ``bins`` equal bins on that interval
  hold every score, nothing is clipped. ``z_k`` is a monotone function of the
  softmax score, so it ranks samples identically; unlike softmax
  probabilities (which ``s ~ 100`` pushes to 0 or 1, collapsing them into a
  few bins), log-odds spread over the bins. The binned AUC differs from the
  exact one only by ties inside a bin (width ``2R / bins``, 0.2 for CLIP with
  2000 bins), counted as one half.

The statistics vector ``[confusion, histograms]`` is summed by secure
aggregation; the server learns only pooled counts, never one provider's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedmed.metrics.classification import accuracy, auc_from_histograms, macro_auc


def one_vs_rest_log_odds(logits: np.ndarray) -> np.ndarray:
    """``z_k = logit_k - logsumexp_{j != k} logit_j`` for every sample and class."""
    logits = np.asarray(logits, dtype=np.float64)
    z = np.empty_like(logits)
    for k in range(logits.shape[1]):
        others = np.delete(logits, k, axis=1)
        top = others.max(axis=1, keepdims=True)
        rest = top[:, 0] + np.log(np.exp(others - top).sum(axis=1))
        z[:, k] = logits[:, k] - rest
    return z


def log_odds_range(logit_scale: float, num_classes: int) -> float:
    """Bound ``R`` with ``|z_k| <= R`` for logits ``s * cos`` (cos in [-1, 1])."""
    return 2.0 * logit_scale + float(np.log(num_classes))


def evaluation_statistics(
    logits: np.ndarray, labels: np.ndarray, bins: int, logit_scale: float
) -> np.ndarray:
    """Flat ``[confusion (C*C), log-odds histograms (C*2*bins)]`` of one provider."""
    labels = np.asarray(labels).reshape(-1)
    num_classes = logits.shape[1]
    logit_range = log_odds_range(logit_scale, num_classes)
    confusion = np.zeros((num_classes, num_classes))
    np.add.at(confusion, (labels, logits.argmax(axis=1)), 1.0)
    z = one_vs_rest_log_odds(logits)
    scaled = (z + logit_range) / (2 * logit_range) * bins
    index = np.clip(np.floor(scaled).astype(np.int64), 0, bins - 1)
    hist = np.zeros((num_classes, 2, bins))
    for k in range(num_classes):
        positive = labels == k
        hist[k, 0] = np.bincount(index[positive, k], minlength=bins)
        hist[k, 1] = np.bincount(index[~positive, k], minlength=bins)
    return np.concatenate([confusion.reshape(-1), hist.reshape(-1)])


def split_statistics(
    vector: np.ndarray, num_classes: int, bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Confusion matrix and histograms from a (summed) statistics vector."""
    expected = num_classes * num_classes + num_classes * 2 * bins
    if vector.shape != (expected,):
        raise ValueError(
            f"statistics vector must have {expected} entries, found {vector.shape}"
        )
    counts = np.rint(vector)  # sums of counts; secure decoding is exact to 1e-6
    confusion = counts[: num_classes * num_classes].reshape(num_classes, num_classes)
    hist = counts[num_classes * num_classes :].reshape(num_classes, 2, bins)
    return confusion, hist


def metrics_from_statistics(vector: np.ndarray, num_classes: int, bins: int) -> dict:
    """AUC, ACC and macro ACC of the pooled test data from summed statistics."""
    confusion, hist = split_statistics(vector, num_classes, bins)
    return {
        "auc": auc_from_histograms(hist),
        **confusion_metrics(confusion),
        "num_examples": float(confusion.sum()),
    }


def confusion_metrics(confusion: np.ndarray) -> dict[str, float]:
    """ACC (trace / total) and macro ACC (mean recall of classes present)."""
    support = confusion.sum(axis=1)
    present = support > 0
    recall = np.diag(confusion)[present] / support[present]
    return {
        "acc": float(np.trace(confusion) / max(confusion.sum(), 1.0)),
        "acc_macro": float(recall.mean()) if present.any() else float("nan"),
    }


def exact_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Centralised metrics from per-sample scores (baselines, one site's view)."""
    labels = np.asarray(labels).reshape(-1)
    num_classes = logits.shape[1]
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    confusion = np.zeros((num_classes, num_classes))
    np.add.at(confusion, (labels, probs.argmax(axis=1)), 1.0)
    return {
        "auc": macro_auc(labels, one_vs_rest_log_odds(logits)),
        "acc": accuracy(labels, probs),
        "acc_macro": confusion_metrics(confusion)["acc_macro"],
        "num_examples": float(len(labels)),
    }


def plot_confusion_matrix(
    confusion: np.ndarray,
    class_names: list[str] | tuple[str, ...],
    path: Path,
    title: str,
) -> Path:
    """Write the confusion matrix (rows: true class) as a PNG (paper Fig. 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    short = [name if len(name) <= 18 else name[:16] + "…" for name in class_names]
    fig, ax = plt.subplots(figsize=(1.1 * len(short) + 2, 1.1 * len(short) + 1))
    ax.imshow(confusion, cmap="Blues")
    for (i, j), value in np.ndenumerate(confusion):
        color = "white" if value > confusion.max() / 2 else "black"
        ax.text(j, i, f"{int(value)}", ha="center", va="center", color=color)
    ax.set_xticks(range(len(short)), short, rotation=45, ha="right")
    ax.set_yticks(range(len(short)), short)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
