"""The SeLoRA model: frozen Stable Diffusion plus adapters on U-Net and text encoder.

Adapters go on linear layers of the U-Net and of the CLIP text encoder, never
on the VAE. Default targets are those of the authors' released code (checked
against its printed parameter counts): every text-encoder linear layer
(q, k, v, out_proj, fc1, fc2) and, in the U-Net, ``to_q``, ``to_k``, ``to_v``
(self- and cross-attention), ``ff.net.0.proj`` and every ResNet
``time_emb_proj``. The training objective is the latent-diffusion
noise-prediction MSE with the DDPM schedule (SeLoRA Sec. 3.2).

Methods: ``selora`` (peft LoRA at rank 1 that grows, scaling fixed at
alpha / initial rank), ``lora`` and ``dylora`` (peft LoRA at the baseline
rank, scaling alpha / r) and ``adalora`` (peft AdaLoRA, init -> target rank).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import AdaLoraConfig, LoraConfig, inject_adapter_in_model
from peft.tuners.adalora import AdaLoraModel
from torch import Tensor, nn

from fedmed.tasks.selora.backbone import (
    Backbone,
    freeze,
    load_pretrained,
    tiny_backbone,
)
from fedmed.tasks.selora.config import SeLoRAConfig
from fedmed.tasks.selora.layer import ADAPTER, reset_lora_init

COMPONENTS = ("unet", "text_encoder")
ADALORA_PLACEHOLDER_STEPS = 1000  # replaced by the real step count at fit time


@dataclass
class DiffusionBatch:
    """One prepared training batch, reusable for a second pass on the same noise."""

    latents: Tensor
    noise: Tensor
    timesteps: Tensor
    input_ids: Tensor

    @property
    def size(self) -> int:
        return int(self.latents.shape[0])


class TextToImageDiffusion(nn.Module):
    """Frozen latent-diffusion backbone with trainable adapters (noise MSE loss)."""

    def __init__(self, backbone: Backbone, method: str) -> None:
        super().__init__()
        self.unet = backbone.unet
        self.text_encoder = backbone.text_encoder
        self.vae = backbone.vae
        self.tokenizer = backbone.tokenizer
        self.noise_scheduler = backbone.scheduler
        self.method = method
        self.tuners: dict[str, AdaLoraModel] = {}

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def tokenize(self, reports: list[str]) -> Tensor:
        """Token ids padded / truncated to the tokenizer's length (77 for SD)."""
        return self.tokenizer(
            reports,
            padding="max_length",
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids.to(self.device)

    def encode_text(self, input_ids: Tensor) -> Tensor:
        """Per-token text features that condition the U-Net's cross-attention."""
        return self.text_encoder(input_ids)[0]

    @torch.no_grad()
    def encode_images(
        self, pixels: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        """VAE latents (scaled as SD does), or the pixels themselves without a VAE."""
        pixels = pixels.to(self.device)
        if self.vae is None:
            return pixels
        latents = self.vae.encode(pixels).latent_dist.sample(generator=generator)
        return latents * self.vae.config.scaling_factor

    def prepare(
        self,
        pixels: Tensor,
        reports: list[str],
        generator: torch.Generator | None = None,
    ) -> DiffusionBatch:
        """Latents, noise and uniformly drawn timesteps for one batch."""
        latents = self.encode_images(pixels, generator)
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator)
        return DiffusionBatch(
            latents, noise, timesteps.to(self.device), self.tokenize(reports)
        )

    def loss(self, batch: DiffusionBatch) -> Tensor:
        """Noise-prediction MSE of the U-Net on the noised latents."""
        noisy = self.noise_scheduler.add_noise(
            batch.latents, batch.noise, batch.timesteps
        )
        context = self.encode_text(batch.input_ids)
        prediction = self.unet(
            noisy, batch.timesteps, encoder_hidden_states=context
        ).sample
        return F.mse_loss(prediction.float(), batch.noise.float())


def component_targets(cfg: SeLoRAConfig) -> dict[str, tuple[str, ...]]:
    """Module-name suffixes that get adapters, per component (VAE never)."""
    return {"unet": cfg.unet_targets_list, "text_encoder": cfg.text_targets_list}


def adapter_config(cfg: SeLoRAConfig, targets: tuple[str, ...]) -> LoraConfig:
    """peft config of one component's adapter for the configured method."""
    if cfg.method == "adalora":
        return AdaLoraConfig(
            init_r=cfg.adalora_init_rank,
            target_r=cfg.adalora_target_rank,
            lora_alpha=cfg.lora_alpha,
            target_modules=list(targets),
            lora_dropout=0.0,
            total_step=ADALORA_PLACEHOLDER_STEPS,
        )
    rank = cfg.init_rank if cfg.method == "selora" else cfg.baseline_rank
    return LoraConfig(
        r=rank,
        lora_alpha=cfg.lora_alpha,
        target_modules=list(targets),
        lora_dropout=0.0,
    )


def inject_adapters(
    model: TextToImageDiffusion, cfg: SeLoRAConfig, generator: torch.Generator
) -> None:
    """Add the method's adapters to U-Net and text encoder (in place)."""
    for component, targets in component_targets(cfg).items():
        if not targets:
            continue
        module = getattr(model, component)
        config = adapter_config(cfg, targets)
        if cfg.method == "adalora":
            model.tuners[component] = AdaLoraModel(module, config, ADAPTER)
        else:
            inject_adapter_in_model(config, module, adapter_name=ADAPTER)
    if cfg.method != "adalora":
        reset_lora_init(model, generator)


def build_diffusion_model(
    cfg: SeLoRAConfig, seed: int, words: tuple[str, ...] = ()
) -> TextToImageDiffusion:
    """Frozen backbone (pretrained folder or tiny) plus adapters, identical per seed."""
    if cfg.pretrained:
        backbone = load_pretrained(cfg.pretrained)
    else:
        backbone = tiny_backbone(
            words,
            width=cfg.tiny_width,
            resolution=cfg.resolution,
            max_tokens=cfg.max_tokens,
            vae=cfg.tiny_vae,
            seed=seed,
        )
    freeze(backbone.unet, backbone.text_encoder, backbone.vae)
    model = TextToImageDiffusion(backbone, cfg.method)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        inject_adapters(model, cfg, torch.Generator().manual_seed(seed))
    return model


def trainable_summary(model: nn.Module) -> dict[str, float]:
    """Trainable / total parameters and trainable % per component and overall."""
    summary: dict[str, float] = {}
    totals = [0, 0]
    for component in COMPONENTS:
        module = getattr(model, component, None)
        if module is None:
            continue
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        total = sum(p.numel() for p in module.parameters())
        summary[f"trainable_params_{component}"] = trainable
        summary[f"trainable_pct_{component}"] = 100.0 * trainable / total
        totals[0] += trainable
        totals[1] += total
    summary["trainable_params"] = totals[0]
    summary["trainable_pct"] = 100.0 * totals[0] / max(totals[1], 1)
    return summary
