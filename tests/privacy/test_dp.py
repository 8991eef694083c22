"""DP-FedAvg clipping and noise: fedmed's in-process path equals Flower's wrapper."""

import numpy as np
import pytest
import torch
from flwr.supercore.differential_privacy import compute_clip_model_update, compute_stdv

from fedmed.privacy.dp import CentralDP, add_noise, clip_update, update_norm


def _states(seed: int):
    gen = torch.Generator().manual_seed(seed)
    reference = {
        "a": torch.randn(3, 4, generator=gen),
        "b": torch.randn(5, generator=gen),
    }
    update = {k: v + torch.randn(v.shape, generator=gen) for k, v in reference.items()}
    return reference, update


@pytest.mark.parametrize("clip", [0.1, 1.0, 100.0])
def test_clipping_matches_flower_compute_clip_model_update(clip):
    # Prepare
    reference, update = _states(0)
    flower = [update[k].numpy().copy() for k in update]
    # Execute
    ours = clip_update(update, reference, clip)
    compute_clip_model_update(flower, [reference[k].numpy() for k in reference], clip)
    # Assert
    for k, theirs in zip(update, flower, strict=False):
        np.testing.assert_allclose(ours[k].numpy(), theirs, rtol=1e-5, atol=1e-6)
    assert update_norm(ours, reference) <= clip * (1 + 1e-5)


def test_noise_has_the_flower_standard_deviation():
    # Prepare
    sigma, clip, sites = 1.5, 0.5, 4
    std = compute_stdv(sigma, clip, sites)
    state = {"w": torch.zeros(200_000)}
    # Execute
    noised = add_noise(state, sigma * clip / sites, torch.Generator().manual_seed(1))
    # Assert
    assert float(noised["w"].std()) == pytest.approx(std, rel=0.02)


def test_central_dp_rejects_bad_settings():
    with pytest.raises(ValueError, match="clip norm"):
        CentralDP(noise_multiplier=1.0, clip_norm=0.0)
    with pytest.raises(ValueError, match="noise multiplier"):
        CentralDP(noise_multiplier=-1.0, clip_norm=1.0)
