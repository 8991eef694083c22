"""Run-config of the classification baseline (prefix ``classify.``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedmed.config import ConfigError

Mode = Literal["full", "linear", "lora"]


@dataclass(frozen=True)
class ClassifyConfig:
    """A timm ViT classifier; ``mode`` decides what trains and travels.

    Architecture overrides (``img-size``, ``patch-size``, ``depth``,
    ``embed-dim``, ``num-heads``) are applied when > 0, which is how tests and
    the demo build a tiny ViT from the same registered timm model.
    """

    model: str = "vit_base_patch16_224"
    checkpoint: str = ""
    mode: Mode = "lora"
    img_size: int = 0
    patch_size: int = 0
    depth: int = 0
    embed_dim: int = 0
    num_heads: int = 0
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: str = "qkv"
    dataset: str = "dermamnist"
    data_size: int = 28
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 32
    local_epochs: int = 1
    max_steps_per_round: int = 0

    def __post_init__(self) -> None:
        if self.lora_rank < 1:
            raise ConfigError(
                f"classify.lora-rank must be >= 1, found {self.lora_rank}"
            )
        if self.lr <= 0 or self.batch_size < 1 or self.local_epochs < 1:
            raise ConfigError(
                "classify.lr must be > 0, classify.batch-size and "
                "classify.local-epochs >= 1"
            )
        for name in ("img_size", "patch_size", "depth", "embed_dim", "num_heads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"classify.{name.replace('_', '-')} must be >= 0")

    def architecture_overrides(self) -> dict[str, int]:
        """timm ``create_model`` kwargs for the non-zero overrides."""
        names = ("img_size", "patch_size", "depth", "embed_dim", "num_heads")
        return {n: getattr(self, n) for n in names if getattr(self, n) > 0}
