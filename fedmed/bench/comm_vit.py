"""Bytes one site sends per round, per exchange mode and wire codec.

Builds the task's real model (random init is enough to count), encodes what
``exchanged`` returns exactly as the ClientApp does, and counts the
ArrayRecord payload bytes Flower sends. The "full" reference is the same
model exchanged in ``full`` mode with the same codec.

    python benchmarks/comm.py            # ViT-B/16 (vit_base_patch16_224)
    python benchmarks/comm.py --quick    # tiny ViT, for tests
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fedmed.bench.results import RESULTS_DIR, update_benchmarks_md, write_result
from fedmed.tasks import get_task
from fedmed.wire import state_to_record

log = logging.getLogger(__name__)

TINY = {
    "classify.img-size": 28,
    "classify.patch-size": 4,
    "classify.depth": 2,
    "classify.embed-dim": 64,
    "classify.num-heads": 4,
}


def measure(
    model_name: str,
    overrides: dict,
    modes=("full", "linear", "lora"),
    codecs=("fp32", "fp16"),
) -> list[dict]:
    rows = []
    for codec in codecs:
        sizes = {}
        for mode in modes:
            config = {
                "task.name": "classify",
                "classify.model": model_name,
                "classify.mode": mode,
                **overrides,
            }
            task = get_task(config)
            sent = task.exchanged(task.build_model())
            sizes[mode] = (
                sum(v.numel() for v in sent.values()),
                state_to_record(sent, codec).count_bytes(),
            )
        for mode in modes:
            params, size = sizes[mode]
            rows.append(
                {
                    "task": "classify",
                    "model": model_name,
                    "mode": mode,
                    "dtype": codec,
                    "exchanged_params": params,
                    "bytes_per_round": size,
                    "full_bytes_per_round": sizes["full"][1],
                    "ratio_to_full": size / sizes["full"][1],
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny ViT instead of ViT-B"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    model, overrides = (
        ("vit_tiny_patch16_224", TINY) if args.quick else ("vit_base_patch16_224", {})
    )
    rows = measure(model, overrides)
    command = "python benchmarks/comm.py" + (" --quick" if args.quick else "")
    notes = (
        "Bytes are Flower ArrayRecord payload bytes of one site's upload per round "
        "(download is the same size); LoRA is rank 8 on attention qkv plus the head."
    )
    write_result("comm", rows, command, notes=notes, results_dir=args.results_dir)
    if args.results_dir == RESULTS_DIR:
        update_benchmarks_md()
    for row in rows:
        log.info(
            "%6s %s: %12s B ratio %.4f",
            row["mode"],
            row["dtype"],
            f"{row['bytes_per_round']:,}",
            row["ratio_to_full"],
        )


if __name__ == "__main__":
    main()
