"""Foundation-model backbones at paper size: per-message fixed cost and memory.

Before: every message builds the task's whole model (``build_model()``), as the
site handler did. After: a process keeps one template per configuration and
hands each message a private model over the shared frozen backbone
(:class:`fedmed.tasks.backbones.BackboneCache`). Each (subject, mode) runs in
its own process so that its peak RSS is its own: message 1 gets a model and
runs one local training step, message 2 gets a model (its fixed cost is the
``build_s_per_message``). Random initialisation at the papers' architectures.

    python -m fedmed.bench.scale_fm SUBJECT MODE OUT.json [--quick]   # one worker
"""

from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedmed.bench import sd15
from fedmed.tasks import Task, get_task
from fedmed.tasks.backbones import BackboneCache

SITES = (1, 10, 50)
MODES = ("before", "after")
MESSAGES_PER_ROUND = 2  # train + evaluate
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@dataclass(frozen=True)
class Subject:
    """One paper-size model: its run config, one training step, a quick twin.

    ``quick_config`` overrides the task's tiny configuration (configs/*_tiny.toml).
    """

    task: str
    model: str
    run_config: dict[str, Any]
    quick_config: dict[str, Any]
    step: Callable[[Task, nn.Module, bool], None]
    batch: int


def _adam_step(model: nn.Module, loss: torch.Tensor) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-5)
    loss.backward()
    optimizer.step()


def _samba_step(task: Task, model: nn.Module, quick: bool) -> None:
    """Mask-decoder step on cached image embeddings (encoder: once per slice)."""
    from fedmed.tasks.samba.train import decode

    sam = model.sam
    grid = sam.image_encoder.img_size // sam.image_encoder.patch_embed.proj.stride[0]
    batch = 2 if quick else SUBJECTS["samba"].batch
    embeddings = torch.randn(batch, sam.prompt_encoder.embed_dim, grid, grid)
    side = sam.image_encoder.img_size
    boxes = torch.tensor([[side * 0.2, side * 0.2, side * 0.6, side * 0.6]] * batch)
    _adam_step(model, decode(sam, embeddings, boxes, multimask=False).sigmoid().mean())


def _selora_step(task: Task, model: nn.Module, quick: bool) -> None:
    """Text encoder + VAE encode + U-Net noise-prediction step with SeLoRA adapters."""
    batch = 2 if quick else SUBJECTS["selora"].batch
    size = task.cfg.resolution
    channels = model.unet.config.in_channels if model.vae is None else 3
    pixels = torch.rand(batch, channels, size, size) * 2 - 1
    generator = torch.Generator().manual_seed(0)
    prepared = model.prepare(pixels, ["normal chest x-ray"] * batch, generator)
    _adam_step(model, model.loss(prepared))


def _fpt_step(task: Task, model: nn.Module, quick: bool) -> None:
    """Side network + fusion step with the frozen ViT run live at high resolution."""
    batch = 2 if quick else SUBJECTS["fpt"].batch
    low, high = task.cfg.low_res, task.cfg.high_res
    logits = model(
        torch.randn(batch, 3, low, low), high_image=torch.randn(batch, 3, high, high)
    )
    _adam_step(model, logits.logsumexp(-1).mean())


def _vfl_step(task: Task, model: nn.Module, quick: bool) -> None:
    """Knowledge-provider CoOp step: text tower forward/backward into the context."""
    from fedmed.tasks.vfl_clip.train import centralised_step, make_optimizer

    text = model()
    batch = 4 if quick else SUBJECTS["vfl-clip"].batch
    embeddings = torch.randn(batch, text.shape[-1])
    labels = torch.arange(batch) % text.shape[0]
    centralised_step(model, make_optimizer(model, 1e-3), embeddings, labels)


SUBJECTS: dict[str, Subject] = {
    "samba": Subject(
        "samba",
        "SAM ViT-B (1024 px)",
        {"task.name": "samba", "samba.sam-model": "vit_b"},
        {},
        _samba_step,
        16,
    ),
    "selora": Subject(
        "selora",
        "Stable Diffusion v1.5 (224 px)",
        {"task.name": "selora"},
        {},
        _selora_step,
        2,
    ),
    "fpt": Subject(
        "fpt",
        "ViT-B/16 frozen at 512 px, live",
        {"task.name": "fpt", "fpt.preload": False},
        {"fpt.preload": False},
        _fpt_step,
        4,
    ),
    "vfl-clip": Subject(
        "vfl-clip",
        "CLIP ViT-L/14 text tower",
        {"task.name": "vfl-clip", "vfl-clip.model": "ViT-L-14"},
        {},
        _vfl_step,
        32,
    ),
}


def _task(subject: Subject, quick: bool) -> Task:
    if quick:
        tiny = CONFIGS / f"{subject.task.replace('-', '_')}_tiny.toml"
        return get_task({**tomllib.loads(tiny.read_text()), **subject.quick_config})
    task = get_task(subject.run_config)
    if subject.task == "selora" and not quick:
        return sd15.PaperSizeSeLoRA(task.cfg, task.platform)
    return task


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _state_mb(model: nn.Module) -> float:
    """Adapter + Adam state of one site: trainable values x 3 (param, m, v), fp32."""
    return 3 * sum(p.numel() for p in model.parameters() if p.requires_grad) * 4 / 2**20


def measure_worker(name: str, mode: str, quick: bool) -> dict[str, Any]:
    """Two messages in this process the ``mode`` way; times and peak RSS."""
    subject = SUBJECTS[name]
    task = _task(subject, quick)
    cache = BackboneCache()
    get_model = task.build_model if mode == "before" else lambda: cache.model(task)
    start = time.perf_counter()
    model = get_model()
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    subject.step(task, model, quick)
    step_s = time.perf_counter() - start
    state_mb = _state_mb(model)
    del model
    gc.collect()
    rss_first = _rss_mb()
    start = time.perf_counter()
    model = get_model()
    build_s = time.perf_counter() - start
    return {
        "first_message_s": first_s,
        "build_s_per_message": build_s,
        "step_s": step_s,
        "site_state_mb": state_mb,
        "backbone_mb": sum(p.numel() * p.element_size() for p in model.parameters())
        / 2**20,
        "peak_rss_mb_after_message_1": rss_first,
        "peak_rss_mb": _rss_mb(),
    }


def _run_worker(name: str, mode: str, quick: bool, work_dir: Path) -> dict[str, Any]:
    out = work_dir / f"{name}-{mode}.json"
    cmd = [sys.executable, "-m", "fedmed.bench.scale_fm", name, mode, str(out)]
    subprocess.run(cmd + (["--quick"] if quick else []), check=True, timeout=3600)
    return json.loads(out.read_text())


def rows_for(subject: Subject, mode: str, found: dict[str, Any], device: str) -> list:
    """One row per site count; site counts beyond the measured two messages derived.

    An actor serves its sites one message at a time and frees each message's
    model, so its peak RSS does not grow with the sites it serves (the worker
    checks message 2 against message 1); its round is ``sites`` times the
    two messages' fixed cost plus one site's compute.
    """
    build, step = found["build_s_per_message"], found["step_s"]
    return [
        {
            "task": subject.task,
            "model": subject.model,
            "mode": mode,
            "sites": sites,
            "actors": 1,
            "build_s_per_message": round(build, 4),
            "site_step_s": round(step, 3),
            "round_s": round(sites * (MESSAGES_PER_ROUND * build + step), 2),
            "fixed_cost_pct": round(100 * build / step, 2),
            "peak_rss_mb_per_actor": round(found["peak_rss_mb"], 1),
            "site_state_mb": round(found["site_state_mb"], 2),
            "backbone_mb": round(found["backbone_mb"], 1),
            "device": device,
        }
        for sites in SITES
    ]


def run_scale_fm(quick: bool, work_dir: Path) -> tuple[list, dict[str, Any]]:
    """Every subject before and after, each mode in a fresh process."""
    from fedmed.bench.results import device_name

    rows: list[dict[str, Any]] = []
    detail: dict[str, Any] = {"quick": quick, "workers": {}}
    for name, subject in SUBJECTS.items():
        for mode in MODES:
            found = _run_worker(name, mode, quick, work_dir)
            detail["workers"][f"{name}-{mode}"] = found
            rows += rows_for(subject, mode, found, device_name())
    return rows, detail


def main(argv: list[str]) -> None:
    name, mode, out = argv[:3]
    torch.set_num_threads(1)
    found = measure_worker(name, mode, "--quick" in argv)
    Path(out).write_text(json.dumps(found, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
