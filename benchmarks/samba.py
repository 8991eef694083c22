"""SAMBA: decoder bytes vs full-SAM bytes per round, and cached vs live embeddings.

Bytes: what one site uploads per round when only the mask decoder travels
(SAMBA) versus full fine-tuning of SAM, for vit_b (built for real, random
init) and vit_l / vit_h (counted on the meta device). Time: one decoder
training epoch with image embeddings read from the on-disk cache versus
recomputing them with the frozen vit_b image encoder every epoch, both through
the task's own ``train_decoder``. On CPU a vit_b encoder pass on a 1024-px
input takes tens of seconds, so only a few slices are timed live and the
per-slice cost is scaled to an epoch of ``--epoch-slices`` slices.

    python benchmarks/samba.py            # 2 live + 16 cached slices (CPU)
    python benchmarks/samba.py --quick    # 1 live + 4 cached slices
"""

from __future__ import annotations

import argparse
import dataclasses
import os
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
from fedmed.tasks.samba.model import build_sam, build_samba_model  # noqa: E402
from fedmed.tasks.samba.train import train_decoder  # noqa: E402
from fedmed.tasks.samba.voting import build_voting_net  # noqa: E402


def parameter_bytes(module: torch.nn.Module) -> tuple[int, int]:
    """(parameters, fp32 bytes) of a module."""
    count = sum(p.numel() for p in module.parameters())
    return count, 4 * count


def bytes_row(arch: str) -> dict:
    """Per-round upload of one site: decoder (+ voting net) vs the whole SAM, fp32."""
    cfg = SambaConfig(sam_model=arch)
    with torch.device("meta"):
        sam, _ = build_sam(cfg)
    decoder_params, decoder_bytes = parameter_bytes(sam.mask_decoder)
    full_params, full_bytes = parameter_bytes(sam)
    _, voting_bytes = parameter_bytes(build_voting_net(cfg))
    return {
        "sam_model": arch,
        "decoder_params": decoder_params,
        "decoder_bytes": decoder_bytes,
        "full_sam_params": full_params,
        "full_sam_bytes": full_bytes,
        "bytes_ratio": decoder_bytes / full_bytes,
        "decoder_voting_bytes": decoder_bytes + voting_bytes,
        "decoder_voting_ratio": (decoder_bytes + voting_bytes) / full_bytes,
    }


def _slices(root: Path, cfg: SambaConfig, count: int):
    """``count`` tumour slices of a phantom as embedding requests + decoder samples."""
    synthesize(root, num_sites=1, cases_per_site=1, seed=0, heldout_cases=0)
    case = find_cases(root / "site_0")[0]
    volume = case.load()
    indices = prompted_indices(volume, "z", "tumour")
    chosen = [("z", i) for i in np.linspace(indices[0], indices[-1], count).astype(int)]
    requests = embedding_requests(case, volume, cfg, chosen)
    return requests, volume


def _sample(request, path, volume) -> SliceSample:
    labels = volume.labels[:, :, request.key.index].astype(np.uint8)
    return SliceSample(request.key, path, labels, brain_box=None)


def _timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def timing_row(live_slices: int, cached_slices: int, epoch_slices: int) -> dict:
    """Seconds per slice of decoder training: live encoder vs cached embeddings."""
    cfg = SambaConfig(sam_model="vit_b", views="z", modalities="flair", voting=False,
                      batch_size=4)  # fmt: skip
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_samba_model(cfg, seed=0).to(device)
    sam, rng = model.sam, np.random.default_rng(0)
    cache = EmbeddingCache(sam, model.description, batch_size=live_slices)
    with tempfile.TemporaryDirectory() as tmp:
        requests, volume = _slices(Path(tmp), cfg, live_slices)
        paths = [cache.path(r) for r in requests]
        images = {p: r.image for p, r in zip(paths, requests, strict=True)}
        live = [_sample(r, p, volume) for r, p in zip(requests, paths, strict=True)]
        encoded: dict[Path, torch.Tensor] = {}

        def encode_every_time(batch_paths, device="cpu"):
            embeddings = encode_live(sam, [images[p] for p in batch_paths])
            encoded.update(zip(batch_paths, embeddings, strict=True))
            return embeddings.to(device)

        live_cfg = dataclasses.replace(cfg, batch_size=live_slices)
        with mock.patch.object(EmbeddingCache, "load", encode_every_time):
            live_s = _timed(lambda: train_decoder(sam, live, live_cfg, 1e-5, 1, rng))
        for request in requests:
            cache.store(request, encoded[cache.path(request)])
        cached = [live[i % len(live)] for i in range(cached_slices)]
        train_decoder(sam, cached[: cfg.batch_size], cfg, 1e-5, 1, rng)  # warm-up
        cached_s = _timed(lambda: train_decoder(sam, cached, cfg, 1e-5, 1, rng))
    live_per, cached_per = live_s / live_slices, cached_s / cached_slices
    return {
        "live_slices_timed": live_slices,
        "cached_slices_timed": cached_slices,
        "live_s_per_slice": live_per,
        "cached_s_per_slice": cached_per,
        "epoch_slices": epoch_slices,
        "live_epoch_s": live_per * epoch_slices,
        "cached_epoch_s": cached_per * epoch_slices,
        "speedup": live_per / cached_per,
        "device": device_name(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed slices")
    parser.add_argument("--epoch-slices", type=int, default=1000)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    gpu = torch.cuda.is_available()
    live, cached = (16, 256) if gpu else ((1, 4) if args.quick else (2, 16))
    load_before = os.getloadavg()[0]
    rows = [bytes_row("vit_b") | timing_row(live, cached, args.epoch_slices)]
    load_after = os.getloadavg()[0]
    rows += [bytes_row(arch) for arch in ("vit_l", "vit_h")]
    command = "python benchmarks/samba.py" + (" --quick" if args.quick else "")
    notes = (
        "Bytes: fp32 tensors one site uploads per round (download is the same); "
        "decoder = SAM's mask decoder (what SAMBA exchanges), decoder_voting adds the "
        "116k-parameter voting net; full = every SAM parameter. Time: one epoch of "
        "mask-decoder training (Adam, Dice loss, batch 4) through the task's "
        f"train_decoder, embeddings recomputed by the frozen image encoder ({live} "
        f"slice(s) timed) vs read from the fp16 on-disk cache ({cached} slices timed), "
        f"per-slice cost scaled linearly to an epoch of {args.epoch_slices} slices; "
        "the speed-up does not depend on that number. The cache is filled once, "
        "costing about one live epoch. "
        f"1-min load average {load_before:.1f} before / {load_after:.1f} after timing "
        f"on {os.cpu_count()} cores: on a shared machine both absolute times grow, "
        "the ratio is taken within one run. "
        + ("" if gpu else "GPU figure pending: rerun on a CUDA machine.")
    )
    write_result("samba", rows, command, notes=notes, results_dir=args.results_dir)
    if args.results_dir == RESULTS_DIR:
        update_benchmarks_md()
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
