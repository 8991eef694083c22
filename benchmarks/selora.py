"""Trainable params and bytes per round: SeLoRA vs LoRA r=4, DyLoRA r=4, AdaLoRA 6->4.

Counts on the full Stable Diffusion v1.5 U-Net and CLIP text encoder, built
from their config values on PyTorch's meta device (shapes without memory or
initialisation; the counts are those of a random or pretrained model), with
each method's adapters on the authors' target layers. SeLoRA is counted at its
starting rank 1; its checked reference is the authors' notebook (text encoder
165,888, U-Net 310,016 trainable). LoRA at rank 6 is counted too: the paper's
"LoRA r=4" percentages are those counts.

Trained ranks: a real federation on the tiny configuration (configs/
selora_tiny.toml, synthetic reports, sites x rounds in process through the
Task interface) gives the grown ranks of its final aggregate; the "paper"
row counts SD v1.5 with every layer at the mean grown rank of the tiny
layers of the same type (an extrapolation of the rank pattern, not an SD
v1.5 training run). The same run records, per round, what each rank rule
(max, sum, energy) and zero-padding lose against the exact mean update.
With CUDA, also the mean training-step time of each method at 224 px, batch 8.

    python benchmarks/selora.py            # everything (+ GPU step time with CUDA)
    python benchmarks/selora.py --quick    # SD v1.5 counts only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tomllib
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedmed.bench.results import (  # noqa: E402
    RESULTS_DIR,
    device_name,
    update_benchmarks_md,
    write_result,
)
from fedmed.tasks import get_task  # noqa: E402
from fedmed.tasks.selora.aggregation import (  # noqa: E402
    aggregate_product_space,
    aggregate_zero_padded,
    measure_aggregate,
    state_ranks,
)
from fedmed.tasks.selora.backbone import (  # noqa: E402
    SD15_TEXT_CONFIG,
    SD15_UNET_CONFIG,
    SD_SCHEDULER,
    Backbone,
)
from fedmed.tasks.selora.config import SeLoRAConfig  # noqa: E402
from fedmed.tasks.selora.layer import lora_layers  # noqa: E402
from fedmed.tasks.selora.model import (  # noqa: E402
    COMPONENTS,
    TextToImageDiffusion,
    inject_adapters,
    trainable_summary,
)
from fedmed.wire import state_to_record  # noqa: E402

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "selora_tiny.toml"
METHODS = {  # label -> (method, baseline rank)
    "selora_r1_start": ("selora", 1),
    "lora_r4": ("lora", 4),
    "dylora_r4": ("dylora", 4),
    "adalora_6_to_4": ("adalora", 4),
    "lora_r6": ("lora", 6),
}
NOTEBOOK_COUNTS = {
    "trainable_params_text_encoder": 165_888,
    "trainable_params_unet": 310_016,
}
#: SeLoRA paper, Sec. 4: trainable % "for the text encoder and U-net".
PAPER_PCT = {"selora": (0.121, 0.368), "lora_r4": (0.216, 0.803)}
#: Layer types for carrying a rank pattern from the tiny model to SD v1.5.
LAYER_KINDS = (
    "attn1.to_q",
    "attn1.to_k",
    "attn1.to_v",
    "attn2.to_q",
    "attn2.to_k",
    "attn2.to_v",
    "ff.net.0.proj",
    "time_emb_proj",
    "q_proj",
    "k_proj",
    "v_proj",
    "out_proj",
    "fc1",
    "fc2",
)
RANK_RULES = ("max", "sum", "energy")


def sd15_model(method: str, device: str, rank: int = 4) -> TextToImageDiffusion:
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
    cfg = SeLoRAConfig(method=method, baseline_rank=rank)
    with torch.device(device):
        inject_adapters(model, cfg, torch.Generator().manual_seed(0))
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


def count_row(label: str, summary: dict, config: str, **extra) -> dict:
    """One flat result row from a :func:`trainable_summary`-shaped dict."""
    return {
        "method": label,
        "config": config,
        "trainable_params": int(summary["trainable_params"]),
        "trainable_pct": summary["trainable_pct"],
        "trainable_params_unet": int(summary["trainable_params_unet"]),
        "trainable_pct_unet": summary["trainable_pct_unet"],
        "trainable_params_text_encoder": int(summary["trainable_params_text_encoder"]),
        "trainable_pct_text_encoder": summary["trainable_pct_text_encoder"],
        **extra,
        "device": device_name(),
    }


def measure(with_gpu: bool) -> list[dict]:
    """Counts of every method on SD v1.5 (meta device), GPU step time with CUDA."""
    rows = []
    for label, (method, rank) in METHODS.items():
        model = sd15_model(method, "meta", rank)
        row = count_row(
            label,
            trainable_summary(model),
            bytes_per_round=upload_bytes(model),
            config="sd15",
        )
        del model
        if with_gpu:
            row["step_time_s"] = step_time_s(sd15_model(method, "cuda", rank))
            torch.cuda.empty_cache()
        rows.append(row)
    return rows


def layer_kind(layer: str) -> str:
    """``<component>.<type>`` of a LoRA layer, e.g. ``unet.attn2.to_k``."""
    component = layer.split(".", 1)[0]
    for kind in LAYER_KINDS:
        if layer.endswith("." + kind):
            return f"{component}.{kind}"
    raise ValueError(f"layer {layer!r} is none of the known types {LAYER_KINDS}")


def mean_rank_by_kind(ranks: dict[str, int]) -> dict[str, float]:
    """Mean rank of the layers of each type (the pattern carried to SD v1.5)."""
    grouped: dict[str, list[int]] = defaultdict(list)
    for layer, rank in ranks.items():
        grouped[layer_kind(layer)].append(rank)
    return {kind: sum(r) / len(r) for kind, r in grouped.items()}


def sd15_pattern_summary(kind_ranks: dict[str, float]) -> dict[str, float]:
    """Trainable params / % of SD v1.5 with each layer at its type's (mean) rank."""
    model = sd15_model("selora", "meta")
    summary: dict[str, float] = {}
    totals = [0.0, 0.0]
    for component in COMPONENTS:
        module = getattr(model, component)
        frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
        adapters = sum(
            kind_ranks[layer_kind(f"{component}.{name}")]
            * (layer.in_features + layer.out_features)
            for name, layer in lora_layers(module).items()
        )
        summary[f"trainable_params_{component}"] = round(adapters)
        summary[f"trainable_pct_{component}"] = 100 * adapters / (frozen + adapters)
        totals[0] += adapters
        totals[1] += frozen + adapters
    summary["trainable_params"] = round(totals[0])
    summary["trainable_pct"] = 100 * totals[0] / totals[1]
    return summary


def aggregation_rows(task, server_round: int, replies, weights) -> list[dict]:
    """What each rank rule (and zero-padding) loses on one round's real replies."""
    rows = []
    for rule in (*RANK_RULES, "zero-pad"):
        if rule == "zero-pad":
            aggregate = aggregate_zero_padded(replies, weights)
        else:
            aggregate = aggregate_product_space(
                replies, weights, rule, task.cfg.energy, task.seed, task.cfg.max_rank
            )
        report = measure_aggregate(replies, weights, aggregate)
        rows.append(
            {
                "method": "selora_aggregation",
                "config": "tiny",
                "sites": len(replies),
                "round": server_round,
                "rank_rule": rule,
                **report,
                "bytes_down_per_site": state_to_record(aggregate, "fp32").count_bytes(),
            }
        )
    return rows


def tiny_federation(sites: int, rounds: int, seed: int = 0):
    """Run the tiny config in process; return (task, final aggregate, agg rows)."""
    config = tomllib.loads(TINY_CONFIG.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        config.update({"data-dir": tmp, "seed": seed})
        task = get_task(config)
        task.synthesize_data(Path(tmp), sites, seed)
        data = [
            task.site_data({"partition-id": k, "num-partitions": sites})
            for k in range(sites)
        ]
        state, rows = task.exchanged(task.build_model()), []
        for server_round in range(1, rounds + 1):
            replies, weights = [], []
            for site in data:
                model = task.build_model()
                task.load_exchanged(model, state)
                result = task.fit(model, site, {"server-round": server_round})
                replies.append(task.exchanged(model))
                weights.append(result.num_examples)
            rows += aggregation_rows(task, server_round, replies, weights)
            state = task.aggregate(replies, weights)
    return task, state, rows


def trained_rows(sites: int, rounds: int) -> tuple[list[dict], list[dict]]:
    """Trainable % after a real tiny run, and SD v1.5 at its rank pattern."""
    task, state, agg_rows = tiny_federation(sites, rounds)
    model = task.build_model()
    task.load_exchanged(model, state)
    ranks = state_ranks(state)
    grown = {
        "ranks_from": f"tiny run, {sites} sites x {rounds} rounds, final aggregate",
        "mean_rank": sum(ranks.values()) / len(ranks),
        "max_rank": max(ranks.values()),
    }
    tiny = count_row(
        "selora_trained",
        trainable_summary(model),
        bytes_per_round=state_to_record(state, "fp32").count_bytes(),
        config="tiny",
        **grown,
    )
    kinds = mean_rank_by_kind(ranks)
    paper = count_row(
        "selora_trained",
        sd15_pattern_summary(kinds),
        config="sd15",
        **{**grown, "ranks_from": grown["ranks_from"] + ", mean rank per layer type"},
    )
    return [tiny, paper], agg_rows


def paper_reading(rows: dict[str, dict]) -> str:
    """How the paper's Sec. 4 percentages map onto these counts."""
    r6 = rows["lora_r6"]
    r1 = rows["selora_r1_start"]
    selora_text, selora_unet = PAPER_PCT["selora"]

    def mean_rank(pct: float, component: str) -> float:
        frozen = (
            r1[f"trainable_params_{component}"] / r1[f"trainable_pct_{component}"] * 100
            - r1[f"trainable_params_{component}"]
        )
        return pct * frozen / (100 - pct) / r1[f"trainable_params_{component}"]

    ada = rows["adalora_6_to_4"]
    return (
        "Reading the paper's percentages (Sec. 4: SeLoRA 0.121 / 0.368 and the "
        "other methods at r=4 0.216 / 0.803 'for the text encoder and U-net'): "
        "rank-6 adapters give U-Net "
        f"{ada['trainable_pct_unet']:.3f} % and text encoder "
        f"{ada['trainable_pct_text_encoder']:.3f} % (AdaLoRA's initial rank 6 with "
        f"its E; plain LoRA r=6: {r6['trainable_pct_unet']:.3f} % / "
        f"{r6['trainable_pct_text_encoder']:.3f} %), so the paper's 'r=4' figures "
        "are rank-6 counts and its U-Net / text-encoder order is swapped; LoRA r=4 "
        f"is {rows['lora_r4']['trainable_pct_unet']:.3f} % / "
        f"{rows['lora_r4']['trainable_pct_text_encoder']:.3f} %. With the same "
        f"swap, SeLoRA's {selora_text} % of the U-Net is a mean rank of "
        f"{mean_rank(selora_text, 'unet'):.2f} and {selora_unet} % of the text "
        f"encoder a mean rank of {mean_rank(selora_unet, 'text_encoder'):.2f}."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="SD v1.5 counts only: no run, no GPU"
    )
    parser.add_argument("--sites", type=int, default=3, help="tiny run's sites")
    parser.add_argument("--rounds", type=int, default=3, help="tiny run's rounds")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    with_gpu = torch.cuda.is_available() and not args.quick
    rows = measure(with_gpu)
    counts = {row["method"]: row for row in rows}
    for key, expected in NOTEBOOK_COUNTS.items():
        if counts["selora_r1_start"][key] != expected:
            raise RuntimeError(
                f"SeLoRA r=1 {key} = {counts['selora_r1_start'][key]:,}, authors' "
                f"notebook has {expected:,}: the target layers differ"
            )
    if not args.quick:
        trained, aggregation = trained_rows(args.sites, args.rounds)
        rows += trained + aggregation
    command = "python benchmarks/selora.py" + (
        " --quick" if args.quick else f" --sites {args.sites} --rounds {args.rounds}"
    )
    notes = " ".join([NOTES, paper_reading(counts), TRAINED_NOTES, step_note(with_gpu)])
    write_result("selora", rows, command, notes=notes, results_dir=args.results_dir)
    if args.results_dir == RESULTS_DIR:
        update_benchmarks_md()


NOTES = (
    "SD v1.5 U-Net (859.5 M) + CLIP text encoder (123.1 M), adapters on the "
    "authors' targets (text encoder q/k/v/out_proj/fc1/fc2; U-Net to_q/to_k/to_v, "
    "ff.net.0.proj, time_emb_proj). trainable_pct = trainable / (backbone + "
    "adapters). bytes_per_round = fp32 payload one site uploads per round (the "
    "download has the same size, except SeLoRA, whose aggregate has the largest "
    "rank per layer among the sites). SeLoRA starts at rank 1 (authors' notebook: "
    "165,888 + 310,016, checked); each added rank adds (in + out) parameters to a "
    "layer. AdaLoRA holds rank 6 (A, B and the singular values E) and masks down "
    "to 4, so it trains and sends rank-6 tensors."
)
TRAINED_NOTES = (
    "selora_trained rows: config tiny = trainable % of the tiny model holding the "
    "final aggregate of a real in-process federation on configs/selora_tiny.toml "
    "(synthetic reports; t = 2 steps, 6 steps per round, lambda 1.1, rank cap 8, "
    "rank rule max); config sd15 = SD v1.5 counted with every layer at the mean "
    "grown rank of the tiny layers of its type (text q/k/v/out_proj/fc1/fc2, "
    "U-Net self- and cross-attention q/k/v, ff.net.0.proj, time_emb_proj): the "
    "tiny run's rank pattern carried over, not an SD v1.5 training run, and the "
    "tiny schedule is not the paper's (t = 40, 10 epochs). selora_aggregation "
    "rows: on each round's real replies of that run, aggregation_rel_error = "
    "||dW_aggregate - dW_mean||_F / ||dW_mean||_F over all layers for each rank "
    "rule (max = default, sum capped by the rank cap, energy 0.99) and for "
    "zero-padding; bytes_down_per_site = fp32 size of that aggregate."
)


def step_note(with_gpu: bool) -> str:
    if with_gpu:
        return "step_time_s: mean Adam step, batch 8, 224 px (latents 28x28), fp32."
    return "GPU training-step time: pending (no CUDA device on this run)."


if __name__ == "__main__":
    main()
