"""The frozen Stable Diffusion backbone: a local SD v1.5 folder or a tiny random one.

A pretrained folder has the diffusers layout of ``runwayml/stable-diffusion-v1-5``
(``unet/``, ``text_encoder/``, ``tokenizer/``, ``vae/``, ``scheduler/``);
nothing is downloaded. Without one, :func:`tiny_backbone` builds the same
architecture classes at toy sizes (random init, seeded): a CLIP text encoder
with a small word-level BPE vocabulary that works offline, a two-level
``UNet2DConditionModel`` and, optionally, a two-level ``AutoencoderKL``. With
``vae=False`` the U-Net denoises images directly in pixel space (3 channels),
which keeps tests fast; generation then uses a plain DDPM sampling loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

if TYPE_CHECKING:
    from diffusers import SchedulerMixin, StableDiffusionPipeline

# Stable Diffusion v1.5 architecture (diffusers / transformers config values).
SD15_UNET_CONFIG = dict(
    act_fn="silu",
    attention_head_dim=8,
    block_out_channels=(320, 640, 1280, 1280),
    cross_attention_dim=768,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=4,
    layers_per_block=2,
    mid_block_scale_factor=1,
    norm_eps=1e-5,
    norm_num_groups=32,
    out_channels=4,
    sample_size=64,
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SD15_TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)
SD_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    steps_offset=1,
)
PIPELINE_FOLDERS = ("unet", "text_encoder", "tokenizer", "vae", "scheduler")
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@dataclass
class Backbone:
    """The frozen parts of a text-to-image latent diffusion model."""

    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    vae: AutoencoderKL | None
    scheduler: DDPMScheduler

    def pipeline(
        self, sampler: SchedulerMixin | None = None
    ) -> StableDiffusionPipeline:
        """diffusers' text-to-image pipeline over these parts (shared, not copied),
        sampling with ``sampler`` (default: the training noise scheduler).

        No safety checker: the images are synthetic chest X-rays scored by the
        project, and the checker's weights would come from the hub.
        """
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=sampler if sampler is not None else self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )


def load_pretrained(folder: str | Path) -> Backbone:
    """Load SD v1.5 parts from a local diffusers folder (no hub access)."""
    root = Path(folder)
    missing = [name for name in PIPELINE_FOLDERS if not (root / name).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"Stable Diffusion folder {root} lacks {', '.join(missing)}/: put a local "
            "copy of stable-diffusion-v1-5 (diffusers layout) there, or leave "
            "selora.pretrained "
            "empty for the tiny random architecture"
        )
    return Backbone(
        unet=UNet2DConditionModel.from_pretrained(root / "unet", local_files_only=True),
        text_encoder=CLIPTextModel.from_pretrained(
            root / "text_encoder", local_files_only=True
        ),
        tokenizer=CLIPTokenizer.from_pretrained(
            root / "tokenizer", local_files_only=True
        ),
        vae=AutoencoderKL.from_pretrained(root / "vae", local_files_only=True),
        scheduler=DDPMScheduler.from_pretrained(
            root / "scheduler", local_files_only=True
        ),
    )


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: merge the best-ranked adjacent pair, repeat."""
    while len(symbols) > 1:
        pairs = [
            (ranks.get(p, len(ranks)), i)
            for i, p in enumerate(zip(symbols, symbols[1:], strict=False))
        ]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2 :]
    return symbols


def tiny_tokenizer(words: Iterable[str], max_length: int) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over printable ASCII plus whole-word merges for ``words``.

    Every character is in the vocabulary, so any text tokenizes; each listed
    word becomes one token. Merges are appended word by word after encoding
    the word with the merges so far, so a later word never splits an earlier one.
    """
    chars = [chr(i) for i in range(33, 127)]
    vocab = {BOS: 0, EOS: 1}
    for token in chars + [c + "</w>" for c in chars]:
        vocab[token] = len(vocab)
    ranks: dict[tuple[str, str], int] = {}
    for word in sorted({w.lower() for w in words if w.isascii() and len(w) > 1}):
        symbols = _apply_merges(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        while len(symbols) > 1:
            ranks[(symbols[0], symbols[1])] = len(ranks)
            vocab.setdefault(symbols[0] + symbols[1], len(vocab))
            symbols = [symbols[0] + symbols[1]] + symbols[2:]
    return CLIPTokenizer(vocab=vocab, merges=list(ranks), model_max_length=max_length)


def tiny_backbone(
    words: Iterable[str],
    width: int = 32,
    resolution: int = 32,
    max_tokens: int = 32,
    vae: bool = True,
    seed: int = 0,
) -> Backbone:
    """SD-shaped toy backbone (random init from ``seed``); the VAE halves the size."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _tiny_parts(words, width, resolution, max_tokens, vae)


def _tiny_parts(words, width, resolution, max_tokens, vae) -> Backbone:
    tokenizer = tiny_tokenizer(words, max_tokens)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=max_tokens,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            projection_dim=width,
        )
    )
    autoencoder = _tiny_vae(resolution) if vae else None
    channels, size = (4, resolution // 2) if vae else (3, resolution)
    unet = UNet2DConditionModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(width, 2 * width),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=width,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    return Backbone(
        unet, text_encoder, tokenizer, autoencoder, DDPMScheduler(**SD_SCHEDULER)
    )


def _tiny_vae(resolution: int) -> AutoencoderKL:
    """Two-level AutoencoderKL: 3 x R x R images <-> 4 x R/2 x R/2 latents."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        sample_size=resolution,
    )


def freeze(*modules: nn.Module | None) -> None:
    """Switch off gradients of every backbone parameter (adapters come after)."""
    for module in modules:
        if module is not None:
            module.requires_grad_(False)
            module.eval()
