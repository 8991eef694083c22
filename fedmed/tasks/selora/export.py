"""Export trained adapters where users load them: peft folders and a diffusers file.

``export_adapters(model, cfg, out)`` writes two formats of the same adapters:

``out/peft/<component>/``
    ``adapter_config.json`` + ``adapter_model.safetensors`` in peft's own
    format, one folder per adapted component; load with
    ``PeftModel.from_pretrained(unet, "out/peft/unet")``. A SeLoRA adapter is
    saved as a LoRA adapter (peft's method registry is closed) whose
    per-layer ranks are its ``rank_pattern``; AdaLoRA keeps peft's AdaLoRA
    config and state dict.
``out/diffusers/pytorch_lora_weights.safetensors``
    diffusers' LoRA layout (keys ``unet.<module>.lora_A.weight`` and
    ``text_encoder.<module>.lora_B.weight``) with diffusers' adapter metadata
    in the safetensors header (what ``save_lora_weights`` writes with
    ``unet_lora_adapter_metadata``); load with
    ``StableDiffusionPipeline.load_lora_weights("out/diffusers")``.

Both formats carry every layer's rank and alpha explicitly. SeLoRA's scaling
stays fixed at s = alpha / initial rank while ranks grow, but peft and
diffusers scale by alpha / r, so a layer of rank r is written with alpha
s * r. Without that metadata diffusers infers alpha = r (scaling 1 instead of
8). AdaLoRA is folded into plain LoRA factors for diffusers, which has no
AdaLoRA loader: A' = E * A and alpha = r * alpha_ada / ranknum (peft's AdaLoRA
forward). ``out/ranks.json`` lists the per-layer ranks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from peft import LoraConfig, get_peft_model_state_dict
from peft.tuners.adalora.layer import AdaLoraLayer
from safetensors.torch import save_file
from torch import Tensor, nn

from fedmed.tasks.selora.config import SeLoRAConfig
from fedmed.tasks.selora.layer import ADAPTER, lora_layers
from fedmed.tasks.selora.model import TextToImageDiffusion, component_targets

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
PEFT_PREFIX = "base_model.model."
#: diffusers' ``LORA_WEIGHT_NAME_SAFE`` and ``LORA_ADAPTER_METADATA_KEY``
DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors"
DIFFUSERS_METADATA_KEY = "lora_adapter_metadata"
ADALORA_EPS = 1e-5  # peft's AdaLoRA divides by (ranknum + 1e-5)


@dataclass(frozen=True)
class LayerAdapter:
    """One layer's adapter as plain LoRA: ΔW = scaling * B A."""

    a: Tensor  # (r, in)
    b: Tensor  # (out, r)
    scaling: float

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    @property
    def alpha(self) -> float:
        """The alpha peft and diffusers need to reproduce ``scaling`` (alpha / r)."""
        return float(self.scaling * self.rank)


def lora_adapters(component: nn.Module, method: str) -> dict[str, LayerAdapter]:
    """Every adapted layer of ``component`` as LoRA factors and scaling, by name."""
    if method == "adalora":
        return _folded_adalora(component)
    return {
        name: LayerAdapter(
            layer.lora_A[ADAPTER].weight.detach(),
            layer.lora_B[ADAPTER].weight.detach(),
            float(layer.scaling[ADAPTER]),
        )
        for name, layer in lora_layers(component).items()
    }


def _folded_adalora(component: nn.Module) -> dict[str, LayerAdapter]:
    adapters = {}
    for name, layer in component.named_modules():
        if isinstance(layer, AdaLoraLayer) and ADAPTER in layer.lora_E:
            ranknum = float(layer.ranknum[ADAPTER]) + ADALORA_EPS
            adapters[name] = LayerAdapter(
                (layer.lora_A[ADAPTER] * layer.lora_E[ADAPTER]).detach(),
                layer.lora_B[ADAPTER].detach(),
                float(layer.scaling[ADAPTER]) / ranknum,
            )
    return adapters


def lora_config_kwargs(adapters: dict[str, LayerAdapter]) -> dict:
    """LoraConfig arguments giving every layer its own rank and alpha."""
    names = sorted(adapters)
    base = min(names, key=lambda n: adapters[n].rank)
    return {
        "r": adapters[base].rank,
        "lora_alpha": adapters[base].alpha,
        "rank_pattern": {n: adapters[n].rank for n in names},
        "alpha_pattern": {n: adapters[n].alpha for n in names},
        "target_modules": names,
        "lora_dropout": 0.0,
        "bias": "none",
    }


def _adapted_components(model: TextToImageDiffusion, cfg: SeLoRAConfig) -> list[str]:
    return [c for c, targets in component_targets(cfg).items() if targets]


def export_peft(
    model: TextToImageDiffusion, cfg: SeLoRAConfig, out: str | Path
) -> dict[str, Path]:
    """Write one peft adapter folder per adapted component; returns the folders."""
    written = {}
    for component in _adapted_components(model, cfg):
        folder = Path(out) / component
        folder.mkdir(parents=True, exist_ok=True)
        if cfg.method == "adalora":
            tuner = model.tuners[component]
            tuner.peft_config[ADAPTER].save_pretrained(str(folder))
            state = get_peft_model_state_dict(tuner.model, adapter_name=ADAPTER)
        else:
            adapters = lora_adapters(getattr(model, component), cfg.method)
            LoraConfig(**lora_config_kwargs(adapters)).save_pretrained(str(folder))
            state = {}
            for name, adapter in adapters.items():
                state[f"{name}.lora_A.weight"] = adapter.a
                state[f"{name}.lora_B.weight"] = adapter.b
        save_file(
            {PEFT_PREFIX + k: v.contiguous().cpu() for k, v in state.items()},
            str(folder / WEIGHTS_NAME),
            metadata={"format": "pt"},
        )
        written[component] = folder
    return written


def export_diffusers(
    model: TextToImageDiffusion, cfg: SeLoRAConfig, out: str | Path
) -> Path:
    """Write ``pytorch_lora_weights.safetensors`` for ``load_lora_weights``."""
    state: dict[str, Tensor] = {}
    metadata: dict[str, object] = {}
    for component in _adapted_components(model, cfg):
        adapters = lora_adapters(getattr(model, component), cfg.method)
        for name, adapter in adapters.items():
            state[f"{component}.{name}.lora_A.weight"] = adapter.a
            state[f"{component}.{name}.lora_B.weight"] = adapter.b
        for key, value in lora_config_kwargs(adapters).items():
            metadata[f"{component}.{key}"] = value
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DIFFUSERS_WEIGHTS
    save_file(
        {k: v.contiguous().cpu() for k, v in state.items()},
        str(path),
        metadata={
            "format": "pt",
            DIFFUSERS_METADATA_KEY: json.dumps(metadata, indent=2, sort_keys=True),
        },
    )
    return path


def export_adapters(
    model: TextToImageDiffusion, cfg: SeLoRAConfig, out: str | Path
) -> list[Path]:
    """Both formats under ``out/peft/`` and ``out/diffusers/``, plus ``ranks.json``."""
    root = Path(out)
    folders = export_peft(model, cfg, root / "peft")
    weights = export_diffusers(model, cfg, root / "diffusers")
    ranks = {
        component: {
            n: a.rank
            for n, a in lora_adapters(getattr(model, component), cfg.method).items()
        }
        for component in folders
    }
    ranks_file = root / "ranks.json"
    ranks_file.write_text(json.dumps(ranks, indent=1, sort_keys=True) + "\n")
    return [*folders.values(), weights, ranks_file]
