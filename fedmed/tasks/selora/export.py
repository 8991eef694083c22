"""Export trained adapters as PEFT adapter folders that stock peft loads unchanged.

One folder per component (``<out>/unet/``, ``<out>/text_encoder/``), each
with ``adapter_config.json`` and ``adapter_model.safetensors`` in peft's own
format. A SeLoRA adapter is saved as a LoRA adapter (peft's method registry is
closed) whose per-layer ranks are its ``rank_pattern``; its fixed scaling s is
kept by an ``alpha_pattern`` of ``s * r`` per layer, since peft scales by
``alpha / r``. Load with ``PeftModel.from_pretrained(unet, "<out>/unet")``.
DyLoRA exports its full rank; AdaLoRA exports through peft's own AdaLoRA
config and state dict.
"""

from __future__ import annotations

import json
from pathlib import Path

from peft import LoraConfig, get_peft_model_state_dict
from safetensors.torch import save_file
from torch import nn

from fedmed.tasks.selora.config import SeLoRAConfig
from fedmed.tasks.selora.layer import ADAPTER, layer_rank, lora_layers
from fedmed.tasks.selora.model import TextToImageDiffusion, component_targets

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
PEFT_PREFIX = "base_model.model."


def lora_export_config(component: nn.Module, targets: tuple[str, ...]) -> LoraConfig:
    """LoRA config reproducing every layer's current rank and scaling."""
    layers = lora_layers(component)
    ranks = {name: layer_rank(layer) for name, layer in layers.items()}
    alphas = {
        name: float(layer.scaling[ADAPTER] * ranks[name])
        for name, layer in layers.items()
    }
    base_rank = min(ranks.values())
    base_name = next(n for n, r in ranks.items() if r == base_rank)
    return LoraConfig(
        r=base_rank,
        lora_alpha=alphas[base_name],
        target_modules=list(targets),
        lora_dropout=0.0,
        rank_pattern={n: r for n, r in ranks.items() if r != base_rank},
        alpha_pattern={n: a for n, a in alphas.items() if a != alphas[base_name]},
    )


def export_component(
    component: nn.Module,
    targets: tuple[str, ...],
    folder: Path,
    method: str,
    tuner=None,
) -> Path:
    """Write one component's adapter folder in peft's format."""
    folder.mkdir(parents=True, exist_ok=True)
    if method == "adalora":
        config = tuner.peft_config[ADAPTER]
        state = get_peft_model_state_dict(tuner.model, adapter_name=ADAPTER)
        config.save_pretrained(str(folder))
    else:
        config = lora_export_config(component, targets)
        state = {
            key: value
            for key, value in component.state_dict().items()
            if ".lora_A." in key or ".lora_B." in key
        }
        state = {
            key.replace(f".{ADAPTER}.", "."): value for key, value in state.items()
        }
        config.save_pretrained(str(folder))
    save_file(
        {PEFT_PREFIX + k: v.detach().contiguous().cpu() for k, v in state.items()},
        str(folder / WEIGHTS_NAME),
        metadata={"format": "pt"},
    )
    return folder


def export_adapters(
    model: TextToImageDiffusion, cfg: SeLoRAConfig, out: str | Path
) -> dict[str, Path]:
    """Export every adapted component of ``model``; returns the folders written."""
    written = {}
    for component, targets in component_targets(cfg).items():
        if not targets:
            continue
        written[component] = export_component(
            getattr(model, component),
            targets,
            Path(out) / component,
            cfg.method,
            model.tuners.get(component),
        )
    ranks = {
        c: {n: layer_rank(layer) for n, layer in lora_layers(getattr(model, c)).items()}
        for c in written
    }
    if cfg.method != "adalora":
        (Path(out) / "ranks.json").write_text(json.dumps(ranks, indent=1) + "\n")
    return written
