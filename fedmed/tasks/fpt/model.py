"""The FPT network: frozen LPM (optional at training time), side ViT, fusion, head.

FPT Eq. 1-2: the side network S has the LPM's depth and 1/k of its width and
runs on the low-resolution image (asymmetric input, §2.2). Before each side
layer, that layer's fused fine-grained prompts join the side sequence and are
dropped after it. With preloading (§2.5) the frozen model is not part of the
training network at all: its K/V come from the on-disk cache. What trains and
travels is ``side.*`` (side ViT with its classifier head) and ``fusion.*``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from fedmed.tasks.fpt.config import FptConfig
from fedmed.tasks.fpt.frozen import (
    FrozenKV,
    create_vit,
    warn_if_randomly_initialised,
)
from fedmed.tasks.fpt.fusion import FineGrainedFusion

log = logging.getLogger(__name__)

EXCHANGED_PREFIXES = ("side.", "fusion.")


def forward_with_layer_prompts(
    vit: VisionTransformer, images: Tensor, layer_prompts: Callable[[int], Tensor]
) -> Tensor:
    """Classify ``images`` with per-layer prompt tokens appended to the sequence.

    ``layer_prompts(l)`` returns ``(B, M, width)`` tokens that join the sequence
    before block ``l`` and are dropped after it (FPT's side layers, and deep
    visual prompt tuning). The steps are those of timm's ``forward_features``.
    """
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
    for layer, block in enumerate(vit.blocks):
        prompts = layer_prompts(layer)
        x = block(torch.cat([x, prompts], dim=1))[:, : -prompts.shape[1]]
    return vit.forward_head(vit.norm(x))


class FptModel(nn.Module):
    """Side ViT + fine-grained fusion, fed either cached K/V or the frozen model.

    ``forward(side_image, keys=..., values=...)`` uses preloaded K/V of shape
    ``(B, L, H, T, D)``; ``forward(side_image, high_image=...)`` runs the frozen
    model live under ``no_grad`` (the "no preloading" ablation).
    """

    def __init__(
        self,
        side: VisionTransformer,
        fusion: FineGrainedFusion,
        frozen: FrozenKV | None,
    ) -> None:
        super().__init__()
        self.side = side
        self.fusion = fusion
        self.frozen = frozen

    def forward(
        self,
        side_image: Tensor,
        keys: Tensor | None = None,
        values: Tensor | None = None,
        high_image: Tensor | None = None,
    ) -> Tensor:
        if keys is None or values is None:
            if self.frozen is None or high_image is None:
                raise ValueError(
                    "FptModel needs preloaded keys/values, or high_image together "
                    "with a frozen model (build with fpt.preload = false)"
                )
            keys, values = self.frozen(high_image)
        return forward_with_layer_prompts(
            self.side,
            side_image,
            lambda layer: self.fusion(layer, keys[:, layer], values[:, layer]),
        )


def create_side_vit(cfg: FptConfig, frozen: VisionTransformer, seed: int) -> nn.Module:
    """A scaled-down copy of the frozen architecture: same depth, width / k (§2.1).

    Heads keep the frozen count (ViT-B, k=8: width 96, 12 heads of 8), the
    input is the low-resolution image, and the weights are a seeded random
    init, as the authors' code does.
    """
    width = frozen.embed_dim // cfg.side_reduction
    heads = frozen.blocks[0].attn.num_heads
    if width < 1 or width % heads:
        raise ValueError(
            f"side width {frozen.embed_dim}/{cfg.side_reduction} = {width} must be "
            f"a positive multiple of the {heads} frozen heads; change "
            "fpt.side-reduction"
        )
    patch = cfg.side_patch_size or frozen.patch_embed.patch_size[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        shape = {
            "patch_size": patch,
            "img_size": cfg.low_res,
            "embed_dim": width,
            "num_heads": heads,
            "depth": len(frozen.blocks),
            "num_classes": cfg.num_classes,
        }
        return timm.create_model(cfg.frozen_model, pretrained=False, **shape)


def slice_frozen_weights(side: VisionTransformer, frozen: VisionTransformer) -> int:
    """Initialise side tensors from strided slices of their frozen twins (ablation).

    Along every dimension where the frozen size is k times the side size,
    every k-th entry is taken; for ``qkv`` and the heads this keeps each side
    head inside the matching frozen head (a smaller patch kernel is subsampled
    the same way). Position embeddings are first resampled to the side grid.
    Tensors without a compatible twin (the classifier head) keep their random
    init. Returns the number of tensors initialised.
    """
    source = frozen.state_dict()
    done = 0
    with torch.no_grad():
        for name, param in side.named_parameters():
            twin = source.get(name)
            if twin is None or twin.dim() != param.dim():
                continue
            if name == "pos_embed":
                twin = resample_abs_pos_embed(
                    twin,
                    new_size=list(side.patch_embed.grid_size),
                    num_prefix_tokens=side.num_prefix_tokens,
                )
            sliced = _strided_slice(twin, param.shape)
            if sliced is not None:
                param.copy_(sliced)
                done += 1
    return done


def _strided_slice(tensor: Tensor, shape: torch.Size) -> Tensor | None:
    for dim, (big, small) in enumerate(zip(tensor.shape, shape, strict=True)):
        if big == small:
            continue
        if big % small:
            return None
        index = torch.arange(0, big, big // small)
        tensor = tensor.index_select(dim, index)
    return tensor


def build_fpt_model(cfg: FptConfig, seed: int) -> FptModel:
    """FPT network for ``cfg``; deterministic in ``seed`` so all sites start equal.

    The frozen ViT is materialised only when training runs it live
    (``preload = false``) or the side network is sliced from it; otherwise its
    architecture is read on the meta device and its K/V come from the cache.
    """
    live = not cfg.preload or cfg.side_init == "slice"
    if not live:  # create_vit warns only when it materialises the weights
        warn_if_randomly_initialised(cfg)
    vit = create_vit(cfg, seed, device=None if live else "meta")
    side = create_side_vit(cfg, vit, seed)
    if cfg.side_init == "slice":
        log.info(
            "side network: %d tensors sliced from the frozen model",
            slice_frozen_weights(side, vit),
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)
        fusion = FineGrainedFusion(
            num_layers=len(vit.blocks),
            num_prompts=cfg.num_prompts,
            side_dim=side.embed_dim,
            frozen_dim=vit.embed_dim,
            num_heads=vit.blocks[0].attn.num_heads,
            dropout=cfg.prompt_dropout,
            residual=cfg.prompt_residual,
        )
    frozen = FrozenKV(vit, cfg.token_ratio) if not cfg.preload else None
    return FptModel(side, fusion, frozen)
