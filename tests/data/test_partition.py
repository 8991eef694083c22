import numpy as np
import pytest

from fedmed.data.partition import dirichlet_label_skew, iid, partition, quantity_skew


def _covers_once(parts, n):
    joined = np.concatenate(parts)
    return len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))


def test_iid_covers_every_sample_once_in_equal_parts():
    parts = iid(1001, 4, seed=1)
    assert _covers_once(parts, 1001)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_dirichlet_small_alpha_skews_labels_more_than_large_alpha():
    labels = np.repeat(np.arange(5), 200)
    skew = lambda parts: np.mean(  # noqa: E731
        [np.bincount(labels[p], minlength=5).max() / len(p) for p in parts]
    )
    strong = dirichlet_label_skew(labels, 4, alpha=0.1, seed=0)
    weak = dirichlet_label_skew(labels, 4, alpha=100.0, seed=0)
    assert _covers_once(strong, 1000) and _covers_once(weak, 1000)
    assert skew(strong) > 0.6 > 0.3 > skew(weak)


def test_quantity_skew_sizes_vary_and_cover():
    parts = quantity_skew(1000, 5, alpha=0.3, seed=2)
    assert _covers_once(parts, 1000)
    assert max(map(len, parts)) > 3 * min(map(len, parts))


def test_unknown_partitioner_is_rejected():
    with pytest.raises(ValueError, match="unknown partitioner"):
        partition("random", np.zeros(10), 2)
