"""Secure evaluation: dense statistics sum to the pooled metrics; fixed layout."""

from __future__ import annotations

import numpy as np
import pytest

from fedmed.metrics.classification import (
    EDGE_CELLS,
    classification_statistics,
    dense_classification_statistics,
    pooled_classification_metrics,
)
from fedmed.privacy import secure_sum_inprocess, setup_inprocess
from fedmed.privacy.secure_evaluation import (
    evaluation_vector,
    layout,
    read_evaluation_sum,
)
from fedmed.privacy.weighted_sum import update_codec

CLASSES = 7


def _site(seed: int, cases: int = 120):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, cases)
    logits = rng.normal(size=(cases, CLASSES)) + 2.0 * np.eye(CLASSES)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs


def test_the_secure_sum_of_dense_statistics_gives_the_plain_pooled_metrics():
    # Prepare: three 120-image sites, their released statistics
    released = [classification_statistics(*_site(s)) for s in range(3)]
    plain = pooled_classification_metrics(released, CLASSES)
    dense = [dense_classification_statistics(r, CLASSES) for r in released]
    sizes = layout(dense[0])
    names = ("accuracy", "loss")
    vectors = {
        p: evaluation_vector(120, {"accuracy": 0.5 + p / 10}, names, d, 1e9)
        for p, d in enumerate(dense)
    }
    server, parties = setup_inprocess(list(range(3)))
    # Execute
    total = secure_sum_inprocess(server, parties, 1, vectors, update_codec(1e9, 3))
    read = read_evaluation_sum(total.values, names, sizes)
    pooled = pooled_classification_metrics([read.statistics], CLASSES)
    # Assert
    assert pooled["auc"] == pytest.approx(plain["auc"], abs=1e-9)
    assert pooled["accuracy"] == pytest.approx(plain["accuracy"], abs=1e-9)
    assert read.num_examples == pytest.approx(360)
    assert read.metrics == {"accuracy": pytest.approx(0.6)}  # loss: no weight


def test_every_site_masks_the_same_layout_whatever_it_has():
    # Prepare
    full = dense_classification_statistics(
        classification_statistics(*_site(0)), CLASSES
    )
    empty = dense_classification_statistics(None, CLASSES)
    # Execute
    with_values = evaluation_vector(120, {"loss": 0.3}, ("auc", "loss"), full, 1e9)
    with_nothing = evaluation_vector(0, {"auc": np.nan}, ("auc", "loss"), empty, 1e9)
    # Assert: same length; a missing or NaN metric is value 0, weight 0
    assert (
        layout(full)
        == layout(empty)
        == {
            "correct_total": 2,
            "score_cells": CLASSES * 2 * EDGE_CELLS,
        }
    )
    assert with_values.shape == with_nothing.shape
    assert not with_nothing.any()
    assert list(with_values[1:5]) == [0.0, 0.0, pytest.approx(36.0), 120.0]


def test_summed_cells_never_hold_a_single_case_of_a_site():
    # Prepare / Execute: a 120-image site's dense statistics
    dense = dense_classification_statistics(
        classification_statistics(*_site(5)), CLASSES
    )
    cells = np.asarray(dense["score_cells"]).reshape(CLASSES * 2, EDGE_CELLS)
    # Assert: a row's mass is spread over ranges of >= 5 cases: no cell holds
    # one whole case while its neighbours are empty
    for row in cells:
        occupied = row[row > 0]
        assert occupied.size == 0 or occupied.max() < 1.0 or row.sum() >= 5
    assert not any(
        np.isclose(v, 1.0) for row in cells for v in row if v > 0 and row.sum() < 5
    )
