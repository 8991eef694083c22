"""Image generation with trained adapters and its FID / CLIP-score evaluation.

SeLoRA (Sec. 3.3) reports FID (fidelity, Heusel et al. 2017) and CLIP score
(prompt alignment, 100 * max(cos(image, text), 0)) averaged over three seeds.
Generation runs through diffusers' ``StableDiffusionPipeline`` (PNDM
sampler, as the authors' pipeline used) when the model has a VAE, and through
a plain DDPM sampling loop with classifier-free guidance when the tiny model
works in pixel space.

FID uses torchmetrics with Inception weights from a user path (no download;
needs the ``torch-fidelity`` package). Without weights the result is
``fid_proxy``: the same Fréchet distance on features of a fixed random-init
CNN, useful only to compare runs with each other. The CLIP score uses
open_clip with user weights; without them it is ``clip_score_proxy`` from a
small random-init open_clip model.
"""

from __future__ import annotations

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, PNDMScheduler
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.image.fid import FrechetInceptionDistance

from fedmed.tasks.selora.backbone import Backbone
from fedmed.tasks.selora.config import SeLoRAConfig
from fedmed.tasks.selora.model import TextToImageDiffusion

PROXY_SEED = 1234
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@torch.no_grad()
def sample_pixel_space(
    model: TextToImageDiffusion,
    prompts: list[str],
    seed: int,
    steps: int,
    guidance: float,
    resolution: int,
) -> Tensor:
    """DDPM sampling with classifier-free guidance, no VAE: images in [0, 1]."""
    scheduler = DDPMScheduler.from_config(model.noise_scheduler.config)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    channels = model.unet.config.in_channels
    x = torch.randn(len(prompts), channels, resolution, resolution, generator=generator)
    x = x.to(model.device)
    context = model.encode_text(model.tokenize(prompts))
    empty = model.encode_text(model.tokenize([""] * len(prompts)))
    for t in scheduler.timesteps:
        both = model.unet(
            torch.cat([x, x]), t, encoder_hidden_states=torch.cat([empty, context])
        )
        uncond, cond = both.sample.chunk(2)
        eps = uncond + guidance * (cond - uncond)
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    return (x / 2 + 0.5).clamp(0, 1).cpu()


@torch.no_grad()
def generate_images(
    model: TextToImageDiffusion,
    prompts: list[str],
    seed: int,
    steps: int,
    guidance: float,
    resolution: int,
) -> Tensor:
    """Images (N, 3, R, R) in [0, 1] for ``prompts`` with the model's adapters."""
    if model.vae is None:
        return sample_pixel_space(model, prompts, seed, steps, guidance, resolution)
    sampler = PNDMScheduler.from_config(
        model.noise_scheduler.config, skip_prk_steps=True
    )
    parts = Backbone(
        model.unet,
        model.text_encoder,
        model.tokenizer,
        model.vae,
        model.noise_scheduler,
    )
    pipe = parts.pipeline(sampler)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        prompts,
        height=resolution,
        width=resolution,
        num_inference_steps=steps,
        guidance_scale=guidance,
        output_type="pt",
        generator=torch.Generator().manual_seed(seed),
    )
    return out.images.float().cpu()


class ProxyFeatures(nn.Module):
    """Fixed random-init CNN features for ``fid_proxy`` (not Inception: not comparable
    with published FID values)."""

    num_features = 64

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(PROXY_SEED)
            self.net = nn.Sequential(
                nn.Conv2d(3, 32, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(64, 64, 3, stride=2, padding=1),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
        self.requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(F.interpolate(images.float(), size=64, mode="bilinear"))


def fid_metric(inception_weights: str) -> tuple[str, FrechetInceptionDistance]:
    """(metric name, torchmetrics FID): Inception from a user path, else the proxy."""
    if not inception_weights:
        return "fid_proxy", FrechetInceptionDistance(
            feature=ProxyFeatures(), normalize=True
        )
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise ModuleNotFoundError(
            "FID with Inception weights needs the 'torch-fidelity' package "
            "(torchmetrics[image]); install it or unset selora.inception-weights "
            "to report fid_proxy"
        ) from None
    return "fid", FrechetInceptionDistance(
        feature=2048, normalize=True, feature_extractor_weights_path=inception_weights
    )


def clip_model(cfg: SeLoRAConfig) -> tuple[str, nn.Module, int]:
    """(metric name, open_clip model, input size): user weights, else a tiny proxy."""
    if cfg.clip_weights:
        model = open_clip.create_model(cfg.clip_model, pretrained=cfg.clip_weights)
        return "clip_score", model.eval(), model.visual.image_size[0]
    with torch.random.fork_rng():
        torch.manual_seed(PROXY_SEED)
        model = open_clip.CLIP(
            embed_dim=64,
            vision_cfg={"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
            text_cfg={
                "context_length": 77,
                "vocab_size": 49408,
                "width": 64,
                "heads": 4,
                "layers": 2,
            },
        )
    return "clip_score_proxy", model.eval(), 64


@torch.no_grad()
def clip_score(
    model: nn.Module, size: int, images: Tensor, prompts: list[str], clip_name: str
) -> float:
    """Mean 100 * max(cos(image, text), 0) (Hessel et al. 2021) over the pairs."""
    tokenizer = open_clip.get_tokenizer(clip_name)
    pixels = F.interpolate(images.float(), size=size, mode="bicubic").clamp(0, 1)
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    image_emb = F.normalize(model.encode_image((pixels - mean) / std), dim=-1)
    text_emb = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
    return float((100 * (image_emb * text_emb).sum(-1).clamp_min(0)).mean())


def real_images(dataset: Dataset, batch_size: int) -> tuple[Tensor, list[str]]:
    """All images of ``dataset`` in [0, 1] with their reports."""
    images, prompts = [], []
    for pixels, reports in DataLoader(dataset, batch_size=batch_size):
        images.append(pixels / 2 + 0.5)
        prompts.extend(reports)
    return torch.cat(images), prompts


def evaluate_generation(
    model: TextToImageDiffusion, dataset: Dataset, cfg: SeLoRAConfig
) -> dict[str, float]:
    """FID and CLIP score of generated test images, mean and std over the seeds."""
    real, prompts = real_images(dataset, cfg.eval_batch_size)
    fid_name, fid = fid_metric(cfg.inception_weights)
    clip_name, clip, clip_size = clip_model(cfg)
    fids, clips = [], []
    for seed in cfg.seeds:
        fake = torch.cat(
            [
                generate_images(
                    model,
                    prompts[i : i + cfg.eval_batch_size],
                    seed,
                    cfg.num_inference_steps,
                    cfg.guidance_scale,
                    cfg.resolution,
                )
                for i in range(0, len(prompts), cfg.eval_batch_size)
            ]
        )
        fid.reset()
        fid.update(real, real=True)
        fid.update(fake, real=False)
        fids.append(float(fid.compute()))
        clips.append(clip_score(clip, clip_size, fake, prompts, cfg.clip_model))
    return {
        fid_name: float(np.mean(fids)),
        f"{fid_name}_std": float(np.std(fids)),
        clip_name: float(np.mean(clips)),
        f"{clip_name}_std": float(np.std(clips)),
        "generated_images": float(len(prompts) * len(cfg.seeds)),
    }
