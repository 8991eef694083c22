"""SeLoRA on the full Stable Diffusion v1.5 architecture, randomly initialised.

The task reads SD v1.5 only from a local pretrained folder; benchmarks of cost
need the architecture, not the weights, so this builds U-Net, CLIP text
encoder and VAE from their SD v1.5 config values (seeded random init) and
wraps them exactly as ``build_diffusion_model`` does.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from fedmed.data.synth_cxr import REPORT_WORDS
from fedmed.tasks.selora.backbone import (
    SD15_TEXT_CONFIG,
    SD15_UNET_CONFIG,
    SD_SCHEDULER,
    Backbone,
    freeze,
    tiny_tokenizer,
)
from fedmed.tasks.selora.model import TextToImageDiffusion, inject_adapters
from fedmed.tasks.selora.task import SeLoRATask

# Stable Diffusion v1.5 VAE (diffusers config values).
SD15_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    sample_size=512,
)


def sd15_backbone(seed: int) -> Backbone:
    """U-Net 860 M, text encoder 123 M, VAE 84 M parameters, seeded random init."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Backbone(
            unet=UNet2DConditionModel(**SD15_UNET_CONFIG),
            text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT_CONFIG)),
            tokenizer=tiny_tokenizer(
                REPORT_WORDS, SD15_TEXT_CONFIG["max_position_embeddings"]
            ),
            vae=AutoencoderKL(**SD15_VAE_CONFIG),
            scheduler=DDPMScheduler(**SD_SCHEDULER),
        )


class PaperSizeSeLoRA(SeLoRATask):
    """SeLoRA whose model is SD v1.5 at full size (random init) instead of a folder."""

    def build_model(self) -> nn.Module:
        backbone = sd15_backbone(self.seed)
        freeze(backbone.unet, backbone.text_encoder, backbone.vae)
        model = TextToImageDiffusion(backbone, self.cfg.method)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            inject_adapters(model, self.cfg, torch.Generator().manual_seed(self.seed))
        return model
