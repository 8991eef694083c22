"""The frozen large pre-trained model (LPM) and the key/value maps FPT reuses from it.

FPT Eq. 4 lets fine-grained prompts cross-attend to the LPM's own key and value
maps of every layer, so nothing about the LPM is learned or recomputed. §2.4
keeps, per layer and per head, only the top ``token-ratio`` of tokens ranked by
the average attention they receive in that layer's self-attention map (the
authors' "global" importance). Any timm ViT works: K/V are captured with a
forward hook on each block's ``attn.qkv``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from fedmed.tasks.fpt.config import FptConfig

log = logging.getLogger(__name__)

QUERY_CHUNK = 256


def create_vit(
    cfg: FptConfig, seed: int, num_classes: int = 0, device: str | None = None
) -> VisionTransformer:
    """The configured timm ViT at ``high-res``: user checkpoint or seeded random init.

    A checkpoint goes through timm's own pretrained loader, which resamples the
    position embeddings to the new grid (384 → 512 px) and drops a classifier
    of another size. ``device="meta"`` builds the architecture without weights
    (for shapes and parameter counts).
    """
    kwargs = {"img_size": cfg.high_res, "num_classes": num_classes}
    kwargs |= cfg.frozen_overrides()
    path = checkpoint_path(cfg) if device != "meta" else None
    if device != "meta":
        warn_if_randomly_initialised(cfg)
    with torch.random.fork_rng(devices=[]), torch.device(device or "cpu"):
        torch.manual_seed(seed)
        if path is None or device == "meta":
            model = timm.create_model(cfg.frozen_model, pretrained=False, **kwargs)
        else:
            overlay = {"file": str(path), "custom_load": path.suffix == ".npz"}
            model = timm.create_model(
                cfg.frozen_model,
                pretrained=True,
                pretrained_cfg_overlay=overlay,
                **kwargs,
            )
    _check_vit(model, cfg.frozen_model)
    return model


def checkpoint_path(cfg: FptConfig) -> Path | None:
    """The user checkpoint of the frozen model, or ``None`` for a random init."""
    if not cfg.checkpoint:
        return None
    path = Path(cfg.checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} not found: set fpt.checkpoint to a local timm "
            f"weights file (.safetensors, .pth or the original .npz) of "
            f"{cfg.frozen_model}, e.g. vit_base_patch16_384.augreg_in21k_ft_in1k"
        )
    return path


def warn_if_randomly_initialised(cfg: FptConfig) -> None:
    """Say loudly that a frozen ViT without ``fpt.checkpoint`` knows nothing.

    FPT's prompts only summarise what the frozen model learned in pre-training;
    random keys and values carry no such knowledge, so results are no measure
    of the method. Shrunken test architectures (``frozen-*`` overrides), for
    which no pre-trained weights exist, are reported at INFO level instead.
    """
    if cfg.checkpoint:
        return
    level = logging.INFO if cfg.frozen_overrides() else logging.WARNING
    log.log(
        level,
        "fpt.checkpoint is empty: the frozen %s is randomly initialised, so its "
        "keys and values carry no pre-trained knowledge and FPT results are "
        "meaningless; set fpt.checkpoint to its timm weights file (e.g. "
        "vit_base_patch16_384.augreg_in21k_ft_in1k)",
        cfg.frozen_model,
    )


def _check_vit(model: nn.Module, name: str) -> None:
    blocks = getattr(model, "blocks", None)
    if not isinstance(model, VisionTransformer) or blocks is None:
        raise ValueError(
            f"fpt.frozen-model {name!r} is not a timm VisionTransformer; "
            "use a vit_* model (e.g. vit_base_patch16_384)"
        )
    attn = blocks[0].attn
    if not all(hasattr(attn, a) for a in ("qkv", "num_heads", "head_dim", "scale")):
        raise ValueError(
            f"fpt.frozen-model {name!r} has no fused attn.qkv projection to read "
            "keys and values from; use a standard timm ViT"
        )


def num_selected_tokens(num_tokens: int, ratio: float) -> int:
    """How many tokens per head survive selection (authors: ``int(N * ratio)``)."""
    return num_tokens if ratio >= 1.0 else max(1, int(num_tokens * ratio))


def token_importance(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """Average attention each token receives over all queries: ``(B, H, N)``.

    The softmax map is built a chunk of queries at a time so that the full
    ``(B, H, N, N)`` map of a 1025-token image never sits in memory at once.
    """
    total = torch.zeros(k.shape[:-1], dtype=torch.float32, device=k.device)
    for start in range(0, q.shape[-2], QUERY_CHUNK):
        scores = q[..., start : start + QUERY_CHUNK, :] @ k.transpose(-2, -1) * scale
        total += scores.float().softmax(dim=-1).sum(dim=-2)
    return total / q.shape[-2]


def select_important_tokens(
    q: Tensor, k: Tensor, v: Tensor, ratio: float, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Keep, per head, the keys/values of the top-``ratio`` tokens (FPT §2.4).

    Args:
        q: queries ``(B, H, N, D)`` of one self-attention layer.
        k: keys ``(B, H, N, D)``.
        v: values ``(B, H, N, D)``.
        ratio: fraction of the N tokens to keep (1.0 keeps all, no ranking).
        scale: the layer's attention scale (``D ** -0.5``).

    Returns:
        Selected keys and values ``(B, H, T, D)`` and their token indices
        ``(B, H, T)``, most important first.
    """
    num_tokens = k.shape[-2]
    keep = num_selected_tokens(num_tokens, ratio)
    if keep == num_tokens:
        index = torch.arange(num_tokens, device=k.device).expand(*k.shape[:-1])
        return k, v, index
    index = token_importance(q, k, scale).topk(keep, dim=-1).indices
    gather = index.unsqueeze(-1).expand(-1, -1, -1, k.shape[-1])
    return k.gather(2, gather), v.gather(2, gather), index


class FrozenKV(nn.Module):
    """Runs the frozen ViT once and returns every layer's selected K and V.

    Output of ``forward(images)``: ``keys`` and ``values`` of shape
    ``(B, L, H, T, D)`` with L layers, H heads, T selected tokens and head dim D.
    No gradient is ever taken through this module.
    """

    def __init__(self, vit: VisionTransformer, token_ratio: float) -> None:
        super().__init__()
        self.vit = vit.requires_grad_(False).eval()
        self.token_ratio = token_ratio

    def train(self, mode: bool = True) -> FrozenKV:
        """Stay in eval mode: the frozen model never trains (dropout stays off)."""
        return super().train(False)

    @property
    def num_tokens(self) -> int:
        """Tokens per image the frozen model sees (patches + prefix tokens)."""
        return self.vit.patch_embed.num_patches + self.vit.num_prefix_tokens

    @property
    def kv_shape(self) -> tuple[int, int, int, int]:
        """Per-image ``(L, H, T, D)`` shape of the cached keys (and values)."""
        attn = self.vit.blocks[0].attn
        kept = num_selected_tokens(self.num_tokens, self.token_ratio)
        return (len(self.vit.blocks), attn.num_heads, kept, attn.head_dim)

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        keys: list[Tensor] = []
        values: list[Tensor] = []

        def capture(attn: nn.Module):
            def hook(_module: nn.Module, _inputs: tuple, qkv: Tensor) -> None:
                batch, tokens, _ = qkv.shape
                shape = (batch, tokens, 3, attn.num_heads, attn.head_dim)
                q, k, v = qkv.reshape(shape).permute(2, 0, 3, 1, 4).unbind(0)
                q, k = attn.q_norm(q), attn.k_norm(k)
                k, v, _ = select_important_tokens(q, k, v, self.token_ratio, attn.scale)
                keys.append(k)
                values.append(v)

            return hook

        handles = [
            block.attn.qkv.register_forward_hook(capture(block.attn))
            for block in self.vit.blocks
        ]
        try:
            self.vit.forward_features(images)
        finally:
            for handle in handles:
                handle.remove()
        return torch.stack(keys, dim=1), torch.stack(values, dim=1)
