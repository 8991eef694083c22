"""The preloaded K/V cache (FPT §2.5): equal to live K/V, reused, invalidated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fedmed.data.image_folder import load_rgb
from fedmed.data.synth_highres import write_synthetic_highres
from fedmed.tasks.fpt.data import eval_transform
from fedmed.tasks.fpt.frozen import FrozenKV, create_vit
from fedmed.tasks.fpt.task import FptTask
from fedmed.tasks.registry import get_task

SITE = {"partition-id": 0, "num-partitions": 1}


@pytest.fixture
def one_site(tmp_path):
    write_synthetic_highres(tmp_path, 1, seed=1, size=128, images_per_site=20)
    return tmp_path


def _live_kv(task, records):
    vit = create_vit(task.cfg, task.seed)
    transform = eval_transform(task.cfg.high_res, task.norm)
    images = torch.stack([transform(load_rgb(r.path)) for r in records])
    return FrozenKV(vit, task.cfg.token_ratio)(images)


@pytest.mark.parametrize(("dtype", "tolerance"), [("fp32", 1e-6), ("fp16", 2e-3)])
def test_cached_kv_equal_live_kv(dtype, tolerance, one_site, tiny_run_config):
    # Prepare
    task = get_task(tiny_run_config(one_site, cache_dtype=dtype))
    # Execute
    test = task.site_data(SITE).test
    cached = [test.cache[i] for i in range(len(test))]
    # Assert
    keys, values = _live_kv(task, test.records)
    assert test.cache.keys.dtype == {"fp32": np.float32, "fp16": np.float16}[dtype]
    torch.testing.assert_close(
        torch.stack([k for k, _ in cached]).float(),
        keys,
        rtol=tolerance,
        atol=tolerance,
    )
    torch.testing.assert_close(
        torch.stack([v for _, v in cached]).float(),
        values,
        rtol=tolerance,
        atol=tolerance,
    )


def test_valid_cache_is_reused_without_the_frozen_model(
    one_site, tiny_run_config, monkeypatch
):
    # Prepare
    task = get_task(tiny_run_config(one_site))
    first = task.site_data(SITE)

    def refuse(self):
        raise AssertionError("the frozen model was built although the cache is valid")

    monkeypatch.setattr(FptTask, "_extractor", refuse)
    # Execute
    second = get_task(tiny_run_config(one_site)).site_data(SITE)
    # Assert
    assert second.train.cache.folder == first.train.cache.folder
    assert second.train.cache.size_bytes == first.train.cache.size_bytes > 0


def test_changed_image_or_model_invalidates_the_cache(one_site, tiny_run_config):
    # Prepare
    task = get_task(tiny_run_config(one_site))
    before = task.site_data(SITE).train
    record = before.records[0]
    old_keys, _ = before.cache[0]
    flipped = np.asarray(Image.open(record.path))[::-1].copy()
    # Execute
    Image.fromarray(flipped).save(record.path)
    after = task.site_data(SITE).train
    other_ratio = get_task(tiny_run_config(one_site, token_ratio=0.5)).site_data(SITE)
    # Assert
    assert after.cache.folder != before.cache.folder
    assert not torch.equal(after.cache[0][0], old_keys)
    torch.testing.assert_close(after.cache[1][0], before.cache[1][0])
    assert other_ratio.train.cache.folder not in (
        before.cache.folder,
        after.cache.folder,
    )
    assert other_ratio.train.cache.keys.shape[3] > after.cache.keys.shape[3]


def test_training_with_the_cache_never_runs_the_frozen_model(
    one_site, tiny_run_config, monkeypatch
):
    # Prepare
    task = get_task(tiny_run_config(one_site, max_steps_per_round=2))
    data = task.site_data(SITE)
    model = task.build_model()

    def refuse(self, images):
        raise AssertionError("frozen model ran during training")

    monkeypatch.setattr(FrozenKV, "forward", refuse)
    # Execute
    result = task.fit(model, data, {"server-round": 1})
    # Assert
    assert model.frozen is None
    assert not any(name.startswith("frozen") for name in model.state_dict())
    assert result.metrics["steps"] == 2
    assert result.metrics["kv_cache_mb"] == pytest.approx(
        data.train.cache.size_bytes / 2**20
    )
