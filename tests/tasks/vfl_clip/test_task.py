"""The vfl-clip task: config validation, cached embeddings, local fit and evaluation."""

from __future__ import annotations

import numpy as np
import pytest

import fedmed.tasks.vfl_clip.task as task_module
from fedmed.config import ConfigError
from fedmed.tasks.registry import get_task

from .conftest import tiny_run_config


def test_unknown_key_and_unknown_model_are_refused():
    # Execute / Assert
    with pytest.raises(ConfigError, match="unknown run-config key 'vfl-clip.n-ctxx'"):
        get_task({**tiny_run_config(), "vfl-clip.n-ctxx": 4})
    with pytest.raises(ConfigError, match="vfl-clip.model must be one of RN50x4"):
        get_task(tiny_run_config(model="ViT-H-14"))


def test_missing_checkpoint_names_the_file():
    # Prepare
    task = get_task(tiny_run_config(checkpoint="/nowhere/clip.pt"))
    # Execute / Assert
    with pytest.raises(FileNotFoundError, match="/nowhere/clip.pt does not exist"):
        task.build_model()


def test_embeddings_are_cached_on_disk(synthetic_sites, monkeypatch):
    # Prepare
    task = get_task(tiny_run_config(synthetic_sites))
    node = {"partition-id": 1, "num-partitions": 3}
    first = task.site_data(node)
    cache = synthetic_sites / "site_1" / ".cache" / "vfl_clip"

    def no_encoder(*args, **kwargs):
        raise AssertionError("the image tower must not be built on a warm cache")

    monkeypatch.setattr(task_module, "build_image_encoder", no_encoder)
    # Execute: a fresh task (a fresh process) reads the cache
    second = get_task(tiny_run_config(synthetic_sites)).site_data(node)
    # Assert
    assert len(list(cache.glob("*.npz"))) == 3
    np.testing.assert_array_equal(first.train.embeddings, second.train.embeddings)
    norms = np.linalg.norm(second.test.embeddings, axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_local_fit_lowers_the_loss_and_evaluate_sends_statistics(synthetic_sites):
    # Prepare
    task = get_task(tiny_run_config(synthetic_sites))
    data = task.site_data({"partition-id": 0, "num-partitions": 3})
    model = task.build_model()
    # Execute
    first = task.fit(model, data, {"server-round": 1})
    later = task.fit(model, data, {"server-round": 2})
    result = task.evaluate(model, data)
    # Assert
    assert later.metrics["train_loss"] < first.metrics["train_loss"]
    pooled = task.pooled_metrics([result.statistics])
    assert pooled["acc"] == pytest.approx(result.metrics["acc"])
    assert abs(pooled["auc"] - result.metrics["auc"]) < 0.02
    assert result.num_examples == len(data.test)


def test_pooled_sites_train_like_one_site(synthetic_sites):
    # Prepare
    task = get_task(tiny_run_config(synthetic_sites))
    sites = [task.site_data({"partition-id": k, "num-partitions": 3}) for k in range(3)]
    # Execute
    pooled = task.pool(sites)
    result = task.fit(task.build_model(), pooled, {"server-round": 1})
    # Assert
    assert len(pooled.train) == sum(len(s.train) for s in sites)
    assert result.num_examples == len(pooled.train)
