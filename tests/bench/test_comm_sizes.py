"""Bytes per round per task, mode and codec (fedmed.bench.comm), on tiny configs."""

import pytest

from fedmed.bench.comm import codec_cost, exchange_modes, size_tiny
from fedmed.tasks import list_tasks

HEADER_BYTES = 200  # np.save header + key, per tensor


@pytest.fixture(scope="module")
def rows():
    return [row for name in list_tasks() for row in size_tiny(name)]


def test_every_task_and_exchange_mode_is_sized(rows):
    # Assert
    for name in list_tasks():
        modes = {mode for _, mode in exchange_modes(name)}
        assert {r["mode"] for r in rows if r["task"] == name} == modes
    assert {r["mode"] for r in rows if r["task"] == "classify"} == {
        "full",
        "linear",
        "lora",
    }


def test_fp16_is_half_fp32_and_int8_a_quarter_within_headers(rows):
    # Prepare
    by_key = {(r["task"], r["mode"], r["codec"]): r for r in rows}
    for (task, mode, codec), row in by_key.items():
        if codec != "fp32":
            continue
        fp32 = row["bytes_up_per_round"]
        fp16 = by_key[(task, mode, "fp16")]["bytes_up_per_round"]
        int8 = by_key[(task, mode, "int8")]["bytes_up_per_round"]
        slack = HEADER_BYTES * row["exchanged_tensors"]
        # Assert
        assert fp32 > 0 and fp32 >= 4 * row["exchanged_params"]
        assert abs(fp16 - fp32 / 2) <= slack, (task, mode)
        assert abs(int8 - fp32 / 4) <= 2 * slack, (task, mode)


def test_adapters_send_a_small_fraction_of_the_full_model(rows):
    # Assert
    lora = next(
        r
        for r in rows
        if (r["task"], r["mode"], r["codec"]) == ("classify", "lora", "fp32")
    )
    full = next(
        r
        for r in rows
        if (r["task"], r["mode"], r["codec"]) == ("classify", "full", "fp32")
    )
    assert lora["param_ratio_to_full"] < 0.1 < full["param_ratio_to_full"]
    assert all(r["ratio_to_full"] > 0 for r in rows)


@pytest.mark.slow
def test_codec_cost_runs_every_codec_through_the_wire(tmp_path):
    # Execute
    curves = codec_cost(tmp_path / "data", sites=2, rounds=1, samples=60)
    # Assert
    assert set(curves) == {"fp32", "fp16", "int8"}
    aucs = {codec: history[-1]["auc"] for codec, history in curves.items()}
    assert all(0.0 <= a <= 1.0 for a in aucs.values())
    assert abs(aucs["fp16"] - aucs["fp32"]) < 0.05
