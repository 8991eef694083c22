"""The paper's comparison methods in the same harness (FPT Table 1).

Each baseline is the frozen model's architecture on the high-resolution input
with a linear classifier on the class token; the methods differ only in what
trains (and therefore what travels): ``full`` everything, ``linear`` the head,
``lora`` peft LoRA adapters on ``lora-targets`` plus the head, ``bitfit`` every
bias plus the head, ``prompt`` deep visual prompts (``num-prompts`` per layer,
Jia et al. 2022) plus the head.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, inject_adapter_in_model
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from fedmed.config import csv_list
from fedmed.tasks.fpt.config import FptConfig
from fedmed.tasks.fpt.frozen import create_vit
from fedmed.tasks.fpt.model import forward_with_layer_prompts

VPT_INIT_STD = 0.02


class BaselineModel(nn.Module):
    """A timm ViT classifier on the high-resolution image, optionally prompted."""

    def __init__(self, vit: VisionTransformer, num_prompts: int = 0) -> None:
        super().__init__()
        self.vit = vit
        self.prompts: nn.Parameter | None = None
        if num_prompts:
            shape = (len(vit.blocks), num_prompts, vit.embed_dim)
            self.prompts = nn.Parameter(torch.randn(shape) * VPT_INIT_STD)

    def forward(self, high_image: Tensor) -> Tensor:
        if self.prompts is None:
            return self.vit(high_image)
        batch = high_image.shape[0]
        return forward_with_layer_prompts(
            self.vit,
            high_image,
            lambda layer: self.prompts[layer].expand(batch, -1, -1),
        )


def _trains(name: str, method: str) -> bool:
    """Whether parameter ``name`` trains under ``method`` (head always trains)."""
    if method == "full" or name.startswith("vit.head.") or name == "prompts":
        return True
    if method == "bitfit":
        return name.endswith(".bias")
    if method == "lora":
        return ".lora_" in name
    return False


def build_baseline(
    cfg: FptConfig, seed: int, device: str | None = None
) -> BaselineModel:
    """Baseline ``cfg.method`` on the frozen architecture; deterministic in ``seed``."""
    vit = create_vit(cfg, seed, num_classes=cfg.num_classes, device=device)
    with torch.random.fork_rng(devices=[]), torch.device(device or "cpu"):
        torch.manual_seed(seed + 3)
        if cfg.method == "lora":
            lora = LoraConfig(
                r=cfg.lora_rank,
                lora_alpha=cfg.lora_alpha,
                target_modules=list(csv_list(cfg.lora_targets)),
            )
            vit = inject_adapter_in_model(lora, vit)
        model = BaselineModel(vit, cfg.num_prompts if cfg.method == "prompt" else 0)
    for name, param in model.named_parameters():
        param.requires_grad_(_trains(name, cfg.method))
    return model
