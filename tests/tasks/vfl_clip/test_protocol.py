"""The VFL protocol in process: refusals, dropouts, learning on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from fedmed.privacy import RecoveryFailed
from fedmed.tasks.registry import get_task
from fedmed.tasks.vfl_clip import VflSetupError, resolve_role, run_vfl_inprocess
from fedmed.tasks.vfl_clip.messages import AggregatedGradient, TextFeatures
from fedmed.tasks.vfl_clip.model import build_text_model
from fedmed.tasks.vfl_clip.roles import ImageProvider, KnowledgeProvider

from .conftest import gaussian_split, tiny_config, tiny_run_config


def test_a_single_image_provider_is_refused():
    # Prepare
    cfg = tiny_config()
    rng = np.random.default_rng(0)
    lonely = [ImageProvider(0, gaussian_split(rng, 20), gaussian_split(rng, 10))]
    knowledge = KnowledgeProvider(build_text_model(cfg, 0), cfg.lr)
    # Execute / Assert
    with pytest.raises(VflSetupError, match="at least 2 image providers, found 1"):
        run_vfl_inprocess(cfg, knowledge, lonely, rounds=1)
    with pytest.raises(VflSetupError, match="found 1"):
        resolve_role({"partition-id": 0, "num-partitions": 2}, cfg)


def test_roles_from_partition_and_from_node_config():
    # Prepare
    cfg = tiny_config()
    # Execute
    last = resolve_role({"partition-id": 3, "num-partitions": 4}, cfg)
    first = resolve_role({"partition-id": 0, "num-partitions": 4}, cfg)
    deployed = resolve_role({"role": "image-provider", "site-id": 7}, cfg)
    # Assert
    assert last.role == "knowledge-provider" and last.site is None
    assert (first.role, first.site) == ("image-provider", 0)
    assert (deployed.role, deployed.site) == ("image-provider", 7)
    with pytest.raises(VflSetupError, match="role must be one of"):
        resolve_role({"role": "hospital"}, cfg)


def test_training_continues_when_an_image_provider_drops_out():
    # Prepare: 4 providers (3 neighbours each, threshold 2) survive one dropout;
    # with secure aggregation v2 the dropped provider rejoins the next round
    cfg = tiny_config(secagg_threshold=2)
    rng = np.random.default_rng(3)
    providers = [
        ImageProvider(k, gaussian_split(rng, 30), gaussian_split(rng, 15))
        for k in range(4)
    ]
    knowledge = KnowledgeProvider(build_text_model(cfg, 0), cfg.lr)
    # Execute
    history = run_vfl_inprocess(
        cfg, knowledge, providers, rounds=3, dropouts={2: [1]}, evaluate_every=1
    )
    # Assert
    assert history.contributors == [(0, 1, 2, 3), (0, 2, 3), (0, 1, 2, 3)]
    assert [e["num_examples"] for e in history.evaluations] == [60.0] * 3


def test_three_providers_cannot_lose_one():
    # Prepare: 3 providers have 2 neighbours each and need both (t >= 2 of 2)
    cfg = tiny_config()
    rng = np.random.default_rng(3)
    providers = [
        ImageProvider(k, gaussian_split(rng, 30), gaussian_split(rng, 15))
        for k in range(3)
    ]
    knowledge = KnowledgeProvider(build_text_model(cfg, 0), cfg.lr)
    # Execute / Assert
    with pytest.raises(RecoveryFailed, match="keep at least 2 neighbours"):
        run_vfl_inprocess(cfg, knowledge, providers, rounds=2, dropouts={2: [1]})


def test_vfl_messages_round_trip_as_arrays():
    # Prepare
    text = TextFeatures(3, np.ones((7, 32), np.float32), 100.0)
    aggregate = AggregatedGradient(3, np.zeros((7, 32)), 12.5, 40)
    # Execute
    text_back = TextFeatures.from_bytes(text.to_bytes())
    aggregate_back = AggregatedGradient.from_arrays(aggregate.to_arrays())
    # Assert
    np.testing.assert_array_equal(text_back.features, text.features)
    assert (aggregate_back.loss_sum, aggregate_back.count) == (12.5, 40)


def test_vfl_on_synthetic_dermamnist_beats_chance_auc(synthetic_sites):
    # Prepare: 3 image providers embed their own synthetic images; 1 knowledge provider
    task = get_task(tiny_run_config(synthetic_sites))
    nodes = [{"partition-id": k, "num-partitions": 4} for k in range(3)]
    providers = [task.image_provider(node) for node in nodes]
    knowledge = task.knowledge_provider()
    # Execute
    history = run_vfl_inprocess(task.cfg, knowledge, providers, rounds=60)
    # Assert
    final = history.evaluations[-1]
    assert final["num_examples"] == sum(len(p.test) for p in providers)
    assert history.train_loss[-1] < history.train_loss[1]
    assert final["auc"] > 0.6, final
