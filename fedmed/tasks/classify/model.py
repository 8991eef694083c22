"""timm ViT classifier in three modes: full, linear probe, LoRA (peft).

The modes change only which tensors train, and therefore which travel:
``full`` trains everything, ``linear`` only the head, ``lora`` low-rank
adapters on the attention projections plus the head.
"""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from torch import nn

from fedmed.config import csv_list
from fedmed.tasks.classify.config import ClassifyConfig

log = logging.getLogger(__name__)


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load user weights (safetensors, or a tensors-only torch file) into ``model``.

    Head tensors whose shape differs (another number of classes) are skipped,
    so an ImageNet checkpoint can initialise a 7-class model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} not found: set classify.checkpoint to a local "
            ".safetensors/.pth file of the timm model's weights"
        )
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(usable))
    model.load_state_dict(usable, strict=False)
    log.info(
        "loaded %d tensors from %s (skipped %d: %s)",
        len(usable),
        path,
        len(skipped),
        skipped[:4],
    )


def build_classifier(cfg: ClassifyConfig, num_classes: int, seed: int) -> nn.Module:
    """Create the ViT, freeze per mode, wrap with peft LoRA when asked."""
    torch.manual_seed(seed)
    model = timm.create_model(
        cfg.model,
        pretrained=False,
        num_classes=num_classes,
        **cfg.architecture_overrides(),
    )
    if cfg.checkpoint:
        load_checkpoint(model, cfg.checkpoint)
    if cfg.mode == "full":
        return model
    for param in model.parameters():
        param.requires_grad_(False)
    head = model.get_classifier()
    if cfg.mode == "linear":
        for param in head.parameters():
            param.requires_grad_(True)
        return model
    torch.manual_seed(seed + 1)
    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(csv_list(cfg.lora_targets)),
        modules_to_save=["head"],
    )
    return get_peft_model(model, lora)


def input_size(model: nn.Module) -> int:
    """Square input side the ViT expects (patch grid x patch size)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    size = base.patch_embed.img_size
    return int(size[0] if isinstance(size, tuple | list) else size)
