"""PPE and PME (FPT §3.2) against FPT Table 1 and hand-computed values."""

from __future__ import annotations

import math

import pytest

from fedmed.metrics.efficiency import (
    efficiency_scaled,
    performance_memory_efficiency,
    performance_parameter_efficiency,
)

FULL_FT_MB = 24_116


@pytest.mark.parametrize(
    ("auc", "params_pct", "mem_mb", "ppe", "pme"),
    [
        (93.96, 100.0, 24_116, 69.54, 69.54),  # full fine-tuning
        (88.30, 0.01, 4_364, 88.30, 82.15),  # linear probing
        (90.81, 0.12, 21_330, 90.76, 68.97),  # BitFit
        (92.26, 1.81, 3_182, 91.54, 87.42),  # FPT
    ],
)
def test_ppe_and_pme_reproduce_fpt_table_1(auc, params_pct, mem_mb, ppe, pme):
    # Execute
    got_ppe = performance_parameter_efficiency(auc, params_pct, 100.0)
    got_pme = performance_memory_efficiency(auc, mem_mb, FULL_FT_MB)
    # Assert (Table 1 derives them from unrounded AUCs: +-0.01 on the last digit)
    assert got_ppe == pytest.approx(ppe, abs=0.015)
    assert got_pme == pytest.approx(pme, abs=0.015)


def test_efficiency_scaling_by_hand():
    # r = 9 -> exp(-log10(10)) = exp(-1); r = 0 -> no penalty
    assert efficiency_scaled(50.0, 9.0) == pytest.approx(50.0 / math.e)
    assert efficiency_scaled(50.0, 0.0) == 50.0
    assert performance_memory_efficiency(80.0, 500, 1000) == pytest.approx(
        80.0 * math.exp(-math.log10(1.5))
    )


@pytest.mark.parametrize("bad", [-0.1, float("nan")])
def test_negative_or_nan_ratio_is_refused(bad):
    with pytest.raises(ValueError, match="ratio"):
        efficiency_scaled(90.0, bad)
    with pytest.raises(ValueError, match="full fine-tuning memory"):
        performance_memory_efficiency(90.0, 10.0, 0.0)
