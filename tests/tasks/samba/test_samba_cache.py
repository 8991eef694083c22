"""The embedding cache: cached equals live, computed once, keyed by encoder+pixels."""

from __future__ import annotations

import numpy as np
import torch

from fedmed.data.brats import find_cases
from fedmed.tasks.samba import embedding_cache
from fedmed.tasks.samba.data import case_samples, normalise_slice, take_slice
from fedmed.tasks.samba.embedding_cache import (
    EmbeddingCache,
    EmbeddingRequest,
    SliceKey,
    encode_live,
)
from fedmed.tasks.samba.model import build_samba_model


def _requests(phantoms, tmp_path, count=3):
    case = find_cases(phantoms / "site_1")[0]
    volume = case.load()
    return [
        EmbeddingRequest(
            tmp_path,
            SliceKey(case.case_id, "flair", "x", index),
            normalise_slice(take_slice(volume.images["flair"], "x", index)),
        )
        for index in range(20, 20 + count)
    ]


def test_cached_embeddings_equal_live_ones(phantoms, tmp_path, tiny_config):
    # Prepare
    model = build_samba_model(tiny_config(voting=False), seed=0)
    cache = EmbeddingCache(model.sam, model.description, batch_size=2)
    requests = _requests(phantoms, tmp_path)
    # Execute
    cached = EmbeddingCache.load(cache.ensure(requests))
    live = encode_live(model.sam, [r.image for r in requests])
    # Assert: identical up to fp16 storage (and batch-size rounding: 1 fp16 ulp)
    assert cached.shape == (3, 32, 16, 16)
    torch.testing.assert_close(cached, live, rtol=2e-3, atol=2e-3)
    assert not torch.allclose(cached[0], cached[1], atol=1e-2)  # distinct slices
    assert requests[0].image.shape == (48, 32)  # non-square x view


def test_second_request_reads_disk_without_encoding(
    phantoms, tmp_path, monkeypatch, tiny_config
):
    # Prepare
    model = build_samba_model(tiny_config(voting=False), seed=0)
    requests = _requests(phantoms, tmp_path)
    first = EmbeddingCache(model.sam, model.description).ensure(requests)

    def forbidden(*args, **kwargs):
        raise AssertionError("the image encoder ran although the cache was filled")

    monkeypatch.setattr(embedding_cache, "encode_live", forbidden)
    # Execute: a fresh cache object, as a new Flower message would build
    again = EmbeddingCache(model.sam, model.description).ensure(requests)
    # Assert
    assert again == first and all(p.is_file() for p in again)


def test_cache_key_changes_with_encoder_weights_and_pixels(
    phantoms, tmp_path, tiny_config
):
    # Prepare
    model = build_samba_model(tiny_config(voting=False), seed=0)
    other = build_samba_model(tiny_config(voting=False), seed=1)
    request = _requests(phantoms, tmp_path, count=1)[0]
    changed = EmbeddingRequest(request.root, request.key, request.image // 2)
    cache = EmbeddingCache(model.sam, model.description)
    # Execute / Assert
    assert cache.fingerprint != EmbeddingCache(other.sam, other.description).fingerprint
    assert cache.path(request) != cache.path(changed)
    assert cache.path(request) == EmbeddingCache(model.sam, model.description).path(
        request
    )


def test_case_samples_cover_tumour_slices_of_every_modality(phantoms, tiny_config):
    # Prepare
    cfg = tiny_config(voting=False, cache_dir="")
    model = build_samba_model(cfg, seed=0)
    case = find_cases(phantoms / "site_0")[0]
    volume = case.load()
    # Execute
    samples = case_samples(
        case, volume, cfg, EmbeddingCache(model.sam, model.description)
    )
    # Assert
    tumour_z = np.flatnonzero((volume.labels > 0).any(axis=(0, 1)))
    assert len(samples) == 4 * len(tumour_z)
    assert {s.key.index for s in samples} == set(tumour_z.tolist())
    assert all((s.labels > 0).any() for s in samples)
    assert all(".samba-cache" in str(s.embedding) for s in samples)
