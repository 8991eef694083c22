"""Trainable counts on the full SD v1.5 configs: the authors' notebook, the paper."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "selora.py"


@pytest.fixture(scope="module")
def bench():
    """benchmarks/selora.py as a module (scripts are not a package)."""
    spec = importlib.util.spec_from_file_location("selora_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows(bench):
    """SD v1.5 counts of every method (meta device), by label."""
    return {row["method"]: row for row in bench.measure(with_gpu=False)}


def test_selora_rank1_counts_match_the_authors_notebook_and_lora_r4_is_four_times(
    rows,
):
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


def test_paper_percentages_are_rank6_counts_with_components_swapped(bench, rows):
    text_pct, unet_pct = bench.PAPER_PCT["lora_r4"]  # as printed: text, U-Net
    adalora = rows["adalora_6_to_4"]
    assert round(adalora["trainable_pct_unet"], 3) == text_pct
    assert round(adalora["trainable_pct_text_encoder"], 3) == unet_pct
    assert round(rows["lora_r6"]["trainable_pct_unet"], 3) == text_pct
    assert round(rows["lora_r4"]["trainable_pct_unet"], 3) != text_pct


def test_rank_pattern_counting_reproduces_uniform_lora_and_sorts_layer_types(
    bench, rows
):
    lora_r4 = rows["lora_r4"]
    uniform = bench.sd15_pattern_summary(
        {f"{c}.{k}": 4.0 for c in ("unet", "text_encoder") for k in bench.LAYER_KINDS}
    )
    ranks = {
        "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k": 3,
        "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k": 5,
        "unet.down_blocks.0.resnets.0.time_emb_proj": 2,
        "text_encoder.encoder.layers.1.mlp.fc1": 1,
    }
    assert uniform["trainable_params_unet"] == lora_r4["trainable_params_unet"]
    assert (
        uniform["trainable_params_text_encoder"]
        == (lora_r4["trainable_params_text_encoder"])
    )
    assert uniform["trainable_pct"] == pytest.approx(lora_r4["trainable_pct"])
    assert bench.mean_rank_by_kind(ranks) == {
        "unet.attn2.to_k": 4.0,
        "unet.time_emb_proj": 2.0,
        "text_encoder.fc1": 1.0,
    }
