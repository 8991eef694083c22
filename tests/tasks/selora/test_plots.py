"""Rank heatmap grid (paper Fig. 3 layout) and the trainable-% table."""

import math

from fedmed.tasks.selora.plots import (
    plot_rank_heatmap,
    rank_grid,
    split_layer_name,
    trainable_table,
)

RANKS = {
    "text_encoder.text_model.encoder.layers.0.self_attn.q_proj": 3,
    "text_encoder.text_model.encoder.layers.1.self_attn.q_proj": 1,
    "text_encoder.text_model.encoder.layers.1.mlp.fc2": 2,
    "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k": 4,
    "unet.mid_block.resnets.0.time_emb_proj": 1,
    "unet.up_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj": 2,
}


def test_layer_names_split_into_block_and_weight_kind():
    assert split_layer_name(next(iter(RANKS))) == (
        "text_encoder",
        "text_model.encoder.layers.0",
        "self_attn.q_proj",
    )
    assert (
        split_layer_name("unet.mid_block.resnets.0.time_emb_proj")[2] == "time_emb_proj"
    )
    kind = split_layer_name(
        "unet.up_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj"
    )[2]
    assert kind == "ff.net.0.proj"


def test_rank_grid_places_each_rank_once_and_heatmap_is_written(tmp_path):
    kinds, blocks, grid = rank_grid(RANKS, "text_encoder")
    assert kinds == ["self_attn.q_proj", "mlp.fc2"] and len(blocks) == 2
    assert grid[0, 0] == 3 and grid[0, 1] == 1 and grid[1, 1] == 2
    assert math.isnan(grid[1, 0])
    path = plot_rank_heatmap(RANKS, tmp_path)
    assert path.is_file() and path.stat().st_size > 5000


def test_trainable_table_lists_every_method():
    rows = [
        {
            "method": "selora_r1_start",
            "trainable_params": 475904,
            "trainable_pct": 0.0484,
            "bytes_per_round": 1987364,
        },
        {
            "method": "lora_r4",
            "trainable_params": 1903616,
            "trainable_pct": 0.1934,
            "bytes_per_round": 7698212,
        },
    ]
    table = trainable_table(rows).splitlines()
    assert len(table) == 4 and "| lora_r4 | 1,903,616 | 0.193 |" in table[3]
