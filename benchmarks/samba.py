"""SAMBA: bytes a site sends vs full SAM; decoder training on cached vs live embeddings.

Bytes: what one site uploads per round (fp32) when only the trained tensors
travel (binary SAMBA and SAMBA-mc: the trained part of the mask decoder plus
the voting net), against full fine-tuning of SAM, for vit_b, vit_l and vit_h
(counted on the meta device with the task's own freezing rules).

Time: decoder training (the task's ``train_decoder``) with SAM vit_b, image
embeddings recomputed by the frozen image encoder ("live") against read from
the on-disk fp16 cache ("cached"). Both paths run the same slices at the same
batch size after one warm-up batch each, batch by batch in alternating order
so that a change of machine load hits both (on CPU with one thread; a cached
step, about a second, is the median of several runs); the whole measurement is
repeated ``--reruns`` times and the row carries the spread of the reruns.

    python benchmarks/samba.py            # CPU: 8 slices, batch 4, 3 reruns
    python benchmarks/samba.py --quick    # 4 slices, 2 reruns (smoke run)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedmed.bench.results import (  # noqa: E402
    RESULTS_DIR,
    device_name,
    update_benchmarks_md,
    write_result,
)
from fedmed.data.brats import find_cases  # noqa: E402
from fedmed.data.synth_brats import synthesize  # noqa: E402
from fedmed.tasks.samba.config import SambaConfig  # noqa: E402
from fedmed.tasks.samba.data import (  # noqa: E402
    SliceSample,
    embedding_requests,
    prompted_indices,
)
from fedmed.tasks.samba.embedding_cache import EmbeddingCache, encode_live  # noqa: E402
from fedmed.tasks.samba.model import (  # noqa: E402
    DECODER_PREFIX,
    VOTING_PREFIX,
    build_samba_model,
)
from fedmed.tasks.samba.train import train_decoder  # noqa: E402

CACHED_REPEATS = 5


def _sent_params(model: torch.nn.Module, prefix: str) -> int:
    return sum(
        p.numel()
        for n, p in model.named_parameters()
        if p.requires_grad and n.startswith(prefix)
    )


def bytes_row(arch: str) -> dict:
    """Per-round fp32 upload of one site (download is the same) vs the whole SAM."""
    sent = {}
    for variant in ("binary", "mc"):
        with torch.device("meta"):
            model = build_samba_model(SambaConfig(sam_model=arch, variant=variant), 0)
        sent[variant] = _sent_params(model, DECODER_PREFIX)
    full_params = sum(p.numel() for p in model.sam.parameters())
    voting = _sent_params(model, VOTING_PREFIX)
    full_bytes = 4 * full_params
    return {
        "sam_model": arch,
        "decoder_params": sum(p.numel() for p in model.sam.mask_decoder.parameters()),
        "sent_decoder_params_binary": sent["binary"],
        "sent_decoder_params_mc": sent["mc"],
        "sent_voting_params": voting,
        "sent_bytes_binary": 4 * (sent["binary"] + voting),
        "sent_bytes_mc": 4 * (sent["mc"] + voting),
        "full_sam_params": full_params,
        "full_sam_bytes": full_bytes,
        "bytes_ratio_binary": 4 * (sent["binary"] + voting) / full_bytes,
        "bytes_ratio_mc": 4 * (sent["mc"] + voting) / full_bytes,
    }


def _samples(root: Path, cfg: SambaConfig, cache: EmbeddingCache, count: int):
    """``count`` tumour slices (z view, every modality) of a phantom, cached."""
    synthesize(root, num_sites=1, cases_per_site=1, seed=0, heldout_cases=0)
    case = find_cases(root / "site_0")[0]
    volume = case.load()
    indices = prompted_indices(volume, "z", "tumour")
    per_modality = -(-count // len(cfg.modality_list))
    chosen = np.linspace(indices[0], indices[-1], per_modality).astype(int)
    requests = embedding_requests(case, volume, cfg, [("z", i) for i in chosen])
    requests = requests[:count]
    paths = cache.ensure(requests)  # also warms the encoder at this batch size
    samples = [
        SliceSample(r.key, p, volume.labels[:, :, r.key.index].astype(np.uint8), None)
        for r, p in zip(requests, paths, strict=True)
    ]
    return samples, {p: r.image for r, p in zip(requests, paths, strict=True)}


def _timed(fn) -> tuple[float, float]:
    """(wall, process CPU) seconds of ``fn()``."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def _step_seconds(sam, batch, cfg, loader, rng, repeats: int) -> np.ndarray:
    """(wall, CPU) seconds of one training step on ``batch``: median of ``repeats``."""
    with mock.patch.object(EmbeddingCache, "load", loader):
        times = [
            _timed(lambda: train_decoder(sam, batch, cfg, 1e-5, 1, rng))
            for _ in range(repeats)
        ]
    return np.median(np.asarray(times), axis=0)


def _paired_seconds(sam, samples, cfg, live_load, rng) -> dict[str, np.ndarray]:
    """(wall, CPU) seconds of decoder training over ``samples``, live and cached.

    Batch by batch, the two paths alternate which goes first. A cached step
    takes about a second, so a burst of other work on a shared machine would
    dominate it: each cached step is the median of ``CACHED_REPEATS`` runs.
    """
    totals = {"live": np.zeros(2), "cached": np.zeros(2)}
    for number, start in enumerate(range(0, len(samples), cfg.batch_size)):
        batch = samples[start : start + cfg.batch_size]
        order = ("live", "cached") if number % 2 == 0 else ("cached", "live")
        for path in order:
            if path == "live":
                totals[path] += _step_seconds(sam, batch, cfg, live_load, rng, 1)
            else:
                totals[path] += _step_seconds(
                    sam, batch, cfg, EmbeddingCache.load, rng, CACHED_REPEATS
                )
    return totals


def _median_and_spread(values: list[float]) -> tuple[float, float]:
    """Median and spread = (max - min) / median, in percent."""
    median = float(statistics.median(values))
    return median, float(100.0 * (max(values) - min(values)) / median)


def timing_row(slices: int, batch: int, reruns: int) -> dict:
    """Seconds per slice of decoder training, live vs cached, over ``reruns``."""
    cfg = SambaConfig(sam_model="vit_b", views="z", voting=False, batch_size=batch)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_samba_model(cfg, seed=0).to(device)
    sam, rng = model.sam, np.random.default_rng(0)
    cache = EmbeddingCache(sam, model.description, batch_size=batch)
    with tempfile.TemporaryDirectory() as tmp:
        samples, images = _samples(Path(tmp), cfg, cache, slices)

        def live_load(paths, device="cpu"):
            return encode_live(sam, [images[p] for p in paths]).to(device)

        _paired_seconds(sam, samples[:batch], cfg, live_load, rng)  # warm-up
        runs = [
            _paired_seconds(sam, samples, cfg, live_load, rng) for _ in range(reruns)
        ]
    row: dict = {"slices_timed": slices, "batch_size": batch, "reruns": reruns}
    for path in ("live", "cached"):
        per_slice = [run[path][0] / slices for run in runs]
        row[f"{path}_s_per_slice"], row[f"{path}_s_per_slice_spread_pct"] = (
            _median_and_spread(per_slice)
        )
    speedup = [float(run["live"][0] / run["cached"][0]) for run in runs]
    row["speedup"], row["speedup_spread_pct"] = _median_and_spread(speedup)
    row["speedup_min"], row["speedup_max"] = min(speedup), max(speedup)
    for index, value in enumerate(speedup, start=1):
        row[f"speedup_rerun_{index}"] = value
    cpu = [run["live"][1] / run["cached"][1] for run in runs]
    row["speedup_cpu_time"], row["speedup_cpu_time_spread_pct"] = _median_and_spread(
        cpu
    )
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 slices, 2 reruns")
    parser.add_argument("--slices", type=int, default=0, help="0: 8 CPU / 64 GPU")
    parser.add_argument("--reruns", type=int, default=3)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    gpu = torch.cuda.is_available()
    if not gpu:  # one thread: other jobs on a shared CPU perturb it less
        torch.set_num_threads(1)
    batch = 16 if gpu else 4
    slices = args.slices or (4 if args.quick else (64 if gpu else 8))
    reruns = 2 if args.quick else args.reruns
    load_before = os.getloadavg()[0]
    timing = timing_row(slices, batch, reruns)
    load_after = os.getloadavg()[0]
    rows = [bytes_row("vit_b") | timing] + [bytes_row(a) for a in ("vit_l", "vit_h")]
    command = " ".join(
        ["python benchmarks/samba.py"]
        + (["--quick"] if args.quick else [])
        + ([f"--slices {args.slices}"] if args.slices else [])
        + ([f"--reruns {args.reruns}"] if args.reruns != 3 else [])
    )
    notes = _notes(timing, load_before, load_after)
    write_result("samba", rows, command, notes=notes, results_dir=args.results_dir)
    if args.results_dir == RESULTS_DIR:
        update_benchmarks_md()
    for row in rows:
        print(row)


def _notes(timing: dict, load_before: float, load_after: float) -> str:
    return (
        "Bytes: fp32 tensors one site uploads per round (download is the same): the "
        "trained part of SAM's mask decoder (binary SAMBA: without the IoU head, "
        "output MLPs 1-3 and attention key biases; SAMBA-mc: without the IoU head, "
        "output MLP 0 and key biases) plus the voting net's trained tensors; full = "
        "every SAM parameter. Time: mask-decoder training (Adam, Dice loss) through "
        "the task's train_decoder on the same "
        f"{timing['slices_timed']} slices at batch {timing['batch_size']}, "
        "embeddings recomputed by the frozen vit_b image encoder (live) vs read "
        "from the fp16 on-disk cache (cached); both paths warmed up with one batch, "
        "timed batch by batch in alternating order (each cached step the median of "
        f"{CACHED_REPEATS} runs, a live step runs once), on "
        f"{torch.get_num_threads()} CPU thread(s) when no GPU is present; each "
        "figure is the median of "
        f"{timing['reruns']} reruns, spread = (max - min) / median over the reruns; "
        "speedup is the ratio of wall-clock seconds, speedup_cpu_time that of the "
        "process's CPU seconds (less sensitive to other jobs on a shared machine). "
        "The cache is filled once, costing about one live epoch. "
        f"1-min load average {load_before:.1f} before / {load_after:.1f} after "
        f"timing on {os.cpu_count()} cores (shared machine). Device: {device_name()}."
    )


if __name__ == "__main__":
    main()
