"""Trainable counts on the full SD v1.5 configs match the authors' notebook."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "selora.py"


def test_selora_rank1_counts_match_the_authors_notebook_and_lora_r4_is_four_times():
    spec = importlib.util.spec_from_file_location("selora_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = {row["method"]: row for row in bench.measure(with_gpu=False)}
    selora, lora, adalora = (
        rows["selora_r1_start"],
        rows["lora_r4"],
        rows["adalora_6_to_4"],
    )
    assert selora["trainable_params_text_encoder"] == 165_888
    assert selora["trainable_params_unet"] == 310_016
    assert lora["trainable_params"] == 4 * selora["trainable_params"]
    assert rows["dylora_r4"]["trainable_params"] == lora["trainable_params"]
    assert adalora["trainable_params"] > 1.5 * lora["trainable_params"]
    assert selora["bytes_per_round"] > 4 * selora["trainable_params"]
