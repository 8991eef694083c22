"""Generation with adapters and its FID / CLIP-score evaluation (proxy labels)."""

import math

import pytest
import torch

from fedmed.tasks.selora.config import SeLoRAConfig
from fedmed.tasks.selora.data import site_splits
from fedmed.tasks.selora.evaluation import (
    evaluate_generation,
    fid_metric,
    generate_images,
)
from fedmed.tasks.selora.model import build_diffusion_model

PROMPTS = ["the heart is enlarged.", "lungs are clear."]


@pytest.mark.parametrize("vae, resolution", [(True, 32), (False, 16)])
def test_generation_through_pipeline_or_ddpm_loop_is_seeded(vae, resolution):
    cfg = SeLoRAConfig(resolution=resolution, max_tokens=16, tiny_vae=vae)
    model = build_diffusion_model(cfg, seed=0, words=("heart",))
    first = generate_images(
        model, PROMPTS, seed=0, steps=3, guidance=2.0, resolution=resolution
    )
    again = generate_images(
        model, PROMPTS, seed=0, steps=3, guidance=2.0, resolution=resolution
    )
    other = generate_images(
        model, PROMPTS, seed=1, steps=3, guidance=2.0, resolution=resolution
    )
    assert first.shape == (2, 3, resolution, resolution)
    assert float(first.min()) >= 0 and float(first.max()) <= 1
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, other)


def test_generation_metrics_are_labelled_proxies_without_weights(report_data):
    cfg = SeLoRAConfig(
        resolution=32,
        max_tokens=32,
        eval_seeds="0,1",
        split="0.5,0.5",
        num_inference_steps=2,
        eval_batch_size=4,
    )
    model = build_diffusion_model(cfg, seed=0, words=("heart",))
    test = site_splits(report_data / "site_0", cfg, 0, 0).test
    metrics = evaluate_generation(model, test, cfg)
    assert set(metrics) == {
        "fid_proxy",
        "fid_proxy_std",
        "clip_score_proxy",
        "clip_score_proxy_std",
        "generated_images",
    }
    assert metrics["generated_images"] == 2 * len(test)
    assert metrics["fid_proxy"] > 0 and math.isfinite(metrics["clip_score_proxy"])


def test_fid_with_user_weights_needs_torch_fidelity_or_says_so():
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        with pytest.raises(ModuleNotFoundError, match="torch-fidelity"):
            fid_metric("weights/pt_inception.pth")
    else:  # pragma: no cover - only where torch-fidelity is installed
        pytest.skip(
            "torch-fidelity installed; real Inception weights are not available"
        )
    name, _ = fid_metric("")
    assert name == "fid_proxy"
