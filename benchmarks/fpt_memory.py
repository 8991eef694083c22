"""FPT: trainable parameters and peak training memory vs full fine-tuning and PEFT.

Reproduces the cost columns of FPT Table 1 / Table 2 on ViT-B/16 at 512 px
(side network on 224 px): full fine-tuning, linear probing, LoRA, BitFit,
prompt tuning, FPT, and the FPT ablations without preloading and without
token selection. Every method is measured in a fresh Python process running
one training step (forward, backward, gradient clipping, AdamW step) of the
task's own model on random inputs of the real shapes, so no allocator state
leaks from one method to the next.

CPU (default): peak resident memory of the step, read from the kernel's
high-water mark (``VmHWM`` after resetting it through ``/proc/self/clear_refs``)
minus the resident memory before the model was built; weights, gradients,
optimizer state, inputs and activations all count. CUDA (``--device cuda``):
``torch.cuda.max_memory_allocated`` of the same step (the paper's figure;
batch 16 by default there).

    python benchmarks/fpt_memory.py            # ViT-B at 512 px, batch 2, CPU
    python benchmarks/fpt_memory.py --quick    # tiny config (configs/fpt_tiny.toml)
    python benchmarks/fpt_memory.py --device cuda --batch 16
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fedmed.bench.results import (  # noqa: E402
    RESULTS_DIR,
    device_name,
    update_benchmarks_md,
    write_result,
)
from fedmed.config import parse_section  # noqa: E402
from fedmed.data.image_folder import ImageRecord  # noqa: E402
from fedmed.tasks.fpt.baselines import build_baseline  # noqa: E402
from fedmed.tasks.fpt.config import FptConfig  # noqa: E402
from fedmed.tasks.fpt.frozen import FrozenKV, create_vit  # noqa: E402
from fedmed.tasks.fpt.kv_cache import open_or_build_cache  # noqa: E402
from fedmed.tasks.fpt.model import build_fpt_model  # noqa: E402

METHODS = {
    "full_finetune": {"method": "full"},
    "linear_probe": {"method": "linear"},
    "lora": {"method": "lora"},
    "bitfit": {"method": "bitfit"},
    "prompt_tuning": {"method": "prompt"},
    "fpt": {"method": "fpt"},
    "fpt_no_preload": {"method": "fpt", "preload": False},
    "fpt_no_preload_no_token_selection": {
        "method": "fpt",
        "preload": False,
        "token_ratio": 1.0,
    },
}
MIB = 2**20


def base_config(quick: bool) -> FptConfig:
    """ViT-B/16 at 512/224 (paper), or the tiny test config."""
    if not quick:
        return FptConfig()
    tiny = tomllib.loads((REPO / "configs" / "fpt_tiny.toml").read_text())
    return parse_section(FptConfig, tiny, "fpt")


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}; CPU peak needs Linux")


def step_inputs(cfg: FptConfig, batch: int) -> dict[str, torch.Tensor]:
    """Random inputs of the shapes the method's training step consumes."""
    generator = torch.Generator().manual_seed(0)
    high = (batch, 3, cfg.high_res, cfg.high_res)
    if cfg.method != "fpt":
        return {"high_image": torch.randn(high, generator=generator)}
    side = torch.randn(batch, 3, cfg.low_res, cfg.low_res, generator=generator)
    if not cfg.preload:
        return {
            "side_image": side,
            "high_image": torch.randn(high, generator=generator),
        }
    shape = (
        batch,
        *FrozenKV(create_vit(cfg, 0, device="meta"), cfg.token_ratio).kv_shape,
    )
    keys, values = (torch.randn(shape, generator=generator).half() for _ in range(2))
    return {"side_image": side, "keys": keys, "values": values}


def warm_up() -> None:
    """Run one tiny training step before the baseline memory is read.

    One-time runtime allocations (autograd engine, kernel libraries) then count
    for no method.
    """
    layer = torch.nn.Linear(16, 16)
    x = torch.randn(2, 4, 4, 16)
    out = F.gelu(F.scaled_dot_product_attention(layer(x), x, x)).sum()
    out.backward()
    torch.optim.AdamW(layer.parameters()).step()


def measure(name: str, cfg: FptConfig, batch: int, device: str) -> dict:
    """Peak memory of one training step of ``cfg``'s model (run in a fresh process)."""
    cuda = device == "cuda"
    warm_up()
    baseline = 0 if cuda else _status_bytes("VmRSS")
    build = build_fpt_model if cfg.method == "fpt" else build_baseline
    model = build(cfg, seed=0).to(device)
    inputs = {k: v.to(device) for k, v in step_inputs(cfg, batch).items()}
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to VmRSS
    start = time.perf_counter()
    loss = F.cross_entropy(model(**inputs), labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
    optimizer.step()
    seconds = time.perf_counter() - start
    if cuda:
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _status_bytes("VmHWM") - baseline
    return {
        "method": name,
        "trainable_params": sum(p.numel() for p in params),
        "peak_mem_mb": round(peak / MIB, 1),
        "step_s": round(seconds, 2),
    }


def run_isolated(name: str, args: argparse.Namespace) -> dict:
    """``measure`` in a fresh interpreter; returns its JSON row."""
    command = [sys.executable, __file__, "--measure", name, "--batch", str(args.batch)]
    command += ["--device", args.device, "--threads", str(args.threads)]
    command += ["--quick"] if args.quick else []
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cache_mb_per_image(cfg: FptConfig) -> float:
    """Size on disk of the preloaded K/V of one image, from a real cache build.

    The frozen model runs on random high-resolution inputs; the image files
    exist only to give the cache its file identities.
    """
    extractor = FrozenKV(create_vit(cfg, seed=0), cfg.token_ratio)
    with tempfile.TemporaryDirectory() as tmp:
        records = []
        for index in range(2):
            path = Path(tmp) / f"image_{index}.png"
            path.write_bytes(bytes([index]))
            records.append(ImageRecord(path, 0, "train"))
        cache = open_or_build_cache(
            records,
            Path(tmp) / "cache",
            "train",
            {"benchmark": True},
            extractor=lambda: extractor,
            load_image=lambda _: torch.randn(3, cfg.high_res, cfg.high_res),
            dtype=cfg.cache_dtype,
        )
        return cache.size_bytes / MIB / len(records)


def collect(args: argparse.Namespace) -> list[dict]:
    """One row per method, with parameter shares and memory relative to full FT."""
    cfg = base_config(args.quick)
    full = build_baseline(dataclasses.replace(cfg, method="full"), 0, device="meta")
    total = sum(p.numel() for p in full.parameters())
    rows = []
    for name in METHODS:
        row = run_isolated(name, args)
        method_cfg = dataclasses.replace(cfg, **METHODS[name])
        fpt = method_cfg.method == "fpt"
        rows.append(
            {
                "method": name,
                "trainable_params": row["trainable_params"],
                "trainable_pct": round(100 * row["trainable_params"] / total, 3),
                "peak_mem_mb": row["peak_mem_mb"],
                "batch": args.batch,
                "resolution": f"{cfg.high_res}/{cfg.low_res}"
                if fpt
                else str(cfg.high_res),
                "device": args.device,
                "step_s": row["step_s"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    full = rows[0]["peak_mem_mb"]
    for row in rows:
        row["peak_mem_ratio"] = round(row["peak_mem_mb"] / full, 4)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny config, seconds")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--batch", type=int, default=None, help="default 2 (CPU), 16 (CUDA)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--measure", choices=sorted(METHODS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.batch = args.batch or (16 if args.device == "cuda" else 2)
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda needs a CUDA GPU; none is visible")
    if args.measure:
        cfg = dataclasses.replace(base_config(args.quick), **METHODS[args.measure])
        print(json.dumps(measure(args.measure, cfg, args.batch, args.device)))
        return
    rows = collect(args)
    write(rows, args, base_config(args.quick))


def write(rows: list[dict], args: argparse.Namespace, cfg: FptConfig) -> None:
    """Results JSON (bench ``fpt_memory``) with the method notes, then BENCHMARKS.md."""
    ratio = next(r for r in rows if r["method"] == "fpt")["peak_mem_ratio"]
    cache_mb = cache_mb_per_image(cfg)
    where = (
        "GPU torch.cuda.max_memory_allocated"
        if args.device == "cuda"
        else (
            "CPU peak resident memory (VmHWM reset via /proc/self/clear_refs, "
            "minus the RSS before building the model, after a tiny warm-up step)"
        )
    )
    model = (
        "tiny config (configs/fpt_tiny.toml)"
        if args.quick
        else "ViT-B/16 at 512 px, side network 224 px"
    )
    notes = (
        f"{model}; one training step per method in a fresh process: {where}. "
        f"FPT / full fine-tuning peak memory = {ratio:.3f} (paper, GPU batch 16: "
        "3,182 / 24,116 MB = 0.13). trainable_pct is relative to the full model. "
        "FPT trains on preloaded fp16 K/V (frozen model not in memory); "
        "fpt_no_preload runs the frozen model live under no_grad; "
        "fpt_no_preload_no_token_selection also keeps all tokens (paper Table 2 "
        f"order). Preloaded K/V on disk: {cache_mb:.2f} MB per image "
        f"({cfg.cache_dtype}, measured from a real cache build; the authors store "
        "fp32). "
    )
    if args.device != "cuda":
        notes += (
            "GPU figure (torch.cuda.max_memory_allocated at batch 16): pending a GPU."
        )
    command = "python benchmarks/fpt_memory.py" + (" --quick" if args.quick else "")
    if args.device == "cuda":
        command += f" --device cuda --batch {args.batch}"
    bench = "fpt_memory" if args.device != "cuda" else "fpt_memory_gpu"
    write_result(
        bench,
        rows,
        command,
        notes=notes,
        device=device_name(),
        results_dir=args.results_dir,
    )
    if args.results_dir == RESULTS_DIR:
        update_benchmarks_md()


if __name__ == "__main__":
    main()
