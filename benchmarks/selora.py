"""Trainable params and bytes per round: SeLoRA vs LoRA r=4, DyLoRA r=4, AdaLoRA 6->4.

Counts on the full Stable Diffusion v1.5 U-Net and CLIP text encoder, built
from their config values on PyTorch's meta device (shapes without memory or
initialisation; the counts are those of a random or pretrained model), with
each method's adapters on the authors' target layers. SeLoRA is counted at its
starting rank 1; its checked reference is the authors' notebook (text encoder
165,888, U-Net 310,016 trainable). With CUDA, also the mean training-step time
of each method at 224 px, batch 8 (random init, U-Net + text encoder, VAE
encoding excluded).

    python benchmarks/selora.py            # counts (+ GPU step time with CUDA)
    python benchmarks/selora.py --quick    # counts only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedmed.bench.results import (  # noqa: E402
    RESULTS_DIR,
    device_name,
    update_benchmarks_md,
    write_result,
)
from fedmed.records import state_to_record  # noqa: E402
from fedmed.tasks.selora.backbone import (  # noqa: E402
    SD15_TEXT_CONFIG,
    SD15_UNET_CONFIG,
    SD_SCHEDULER,
    Backbone,
)
from fedmed.tasks.selora.config import SeLoRAConfig  # noqa: E402
from fedmed.tasks.selora.model import (  # noqa: E402
    TextToImageDiffusion,
    inject_adapters,
    trainable_summary,
)

METHODS = {
    "selora_r1_start": "selora",
    "lora_r4": "lora",
    "dylora_r4": "dylora",
    "adalora_6_to_4": "adalora",
}
NOTEBOOK_COUNTS = {
    "trainable_params_text_encoder": 165_888,
    "trainable_params_unet": 310_016,
}


def sd15_model(method: str, device: str) -> TextToImageDiffusion:
    """SD v1.5 U-Net + text encoder with ``method``'s adapters (no VAE / tokenizer)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device(device):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
        text = CLIPTextModel(CLIPTextConfig(**SD15_TEXT_CONFIG))
    unet.requires_grad_(False)
    text.requires_grad_(False)
    model = TextToImageDiffusion(
        Backbone(unet, text, None, None, DDPMScheduler(**SD_SCHEDULER)), method
    )
    with torch.device(device):
        inject_adapters(
            model, SeLoRAConfig(method=method), torch.Generator().manual_seed(0)
        )
    return model


def upload_bytes(model: TextToImageDiffusion) -> int:
    """fp32 ArrayRecord payload of one site's reply (the trainable tensors' shapes)."""
    shapes = {
        n: torch.zeros(p.shape) for n, p in model.named_parameters() if p.requires_grad
    }
    return state_to_record(shapes, "fp32").count_bytes()


def step_time_s(model: TextToImageDiffusion, steps: int = 10, batch: int = 8) -> float:
    """Mean wall time of one Adam step (forward + backward) at 224 px on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    latents = torch.randn(batch, 4, 28, 28, device="cuda")
    ids = torch.randint(0, SD15_TEXT_CONFIG["vocab_size"], (batch, 77), device="cuda")
    timesteps = torch.randint(0, 1000, (batch,), device="cuda")
    for i in range(steps + 3):
        if i == 3:
            torch.cuda.synchronize()
            started = time.perf_counter()
        context = model.text_encoder(ids)[0]
        pred = model.unet(latents, timesteps, encoder_hidden_states=context).sample
        torch.nn.functional.mse_loss(pred, latents).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def measure(with_gpu: bool) -> list[dict]:
    rows = []
    for label, method in METHODS.items():
        model = sd15_model(method, "meta")
        summary = trainable_summary(model)
        row = {
            "method": label,
            "trainable_params": int(summary["trainable_params"]),
            "trainable_pct": summary["trainable_pct"],
            "bytes_per_round": upload_bytes(model),
            "trainable_params_unet": int(summary["trainable_params_unet"]),
            "trainable_pct_unet": summary["trainable_pct_unet"],
            "trainable_params_text_encoder": int(
                summary["trainable_params_text_encoder"]
            ),
            "trainable_pct_text_encoder": summary["trainable_pct_text_encoder"],
            "device": device_name(),
        }
        del model
        if with_gpu:
            row["step_time_s"] = step_time_s(sd15_model(method, "cuda"))
            torch.cuda.empty_cache()
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="counts only, no GPU timing"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    with_gpu = torch.cuda.is_available() and not args.quick
    rows = measure(with_gpu)
    selora = rows[0]
    for key, expected in NOTEBOOK_COUNTS.items():
        if selora[key] != expected:
            raise RuntimeError(
                f"SeLoRA r=1 {key} = {selora[key]:,}, authors' notebook "
                f"has {expected:,}: the target layers differ"
            )
    notes = (
        "SD v1.5 U-Net (859.5 M) + CLIP text encoder (123.1 M), adapters on the "
        "authors' targets (text encoder q/k/v/out_proj/fc1/fc2; U-Net to_q/to_k/to_v, "
        "ff.net.0.proj, time_emb_proj). trainable_pct = trainable / (backbone + "
        "adapters). bytes_per_round = fp32 payload one site uploads per round (the "
        "download has the same size, except SeLoRA, whose aggregate has the largest "
        "rank per layer among the sites). SeLoRA is counted at its starting rank 1 "
        "(authors' notebook: 165,888 + 310,016, checked); each added rank adds "
        "(in + out) parameters to a layer, so SeLoRA stays below LoRA r=4 while its "
        "mean rank is below 4. AdaLoRA holds rank 6 (A, B and the singular values E) "
        "and masks down to 4, so it trains and sends rank-6 tensors. "
        + (
            "step_time_s: mean Adam step, batch 8, 224 px (latents 28x28), fp32."
            if with_gpu
            else "GPU training-step time: pending (no CUDA device on this run)."
        )
    )
    command = "python benchmarks/selora.py" + (" --quick" if args.quick else "")
    write_result("selora", rows, command, notes=notes, results_dir=args.results_dir)
    if args.results_dir == RESULTS_DIR:
        update_benchmarks_md()


if __name__ == "__main__":
    main()
