"""Performance-efficiency trade-off metrics PPE and PME (FPT §3.2).

Both scale a performance score by ``exp(-log10(r + 1))``: PPE with r the
ratio of trainable parameters to all parameters of the pre-trained model
(the PE metric of He et al. 2022), PME with r the ratio of the method's
training memory to that of fully fine-tuning the same model. Ratios are
fractions (full fine-tuning: r = 1), not percentages; the score keeps its own
unit (FPT Table 1 uses average AUC in %). Example from Table 1: FPT with
1.81% trainable parameters, 3,182 MB vs 24,116 MB and AUC 92.26 has
PPE 91.54 and PME 87.42.
"""

from __future__ import annotations

import math


def efficiency_scaled(score: float, ratio: float) -> float:
    """``score * exp(-log10(ratio + 1))``, the common form of PPE and PME."""
    if not ratio >= 0.0:
        raise ValueError(f"cost ratio must be a fraction >= 0, found {ratio}")
    return score * math.exp(-math.log10(ratio + 1.0))


def performance_parameter_efficiency(
    score: float, trainable_params: float, total_params: float
) -> float:
    """PPE: ``score`` scaled by the trainable-parameter ratio (FPT §3.2)."""
    if total_params <= 0:
        raise ValueError(f"total parameter count must be > 0, found {total_params}")
    return efficiency_scaled(score, trainable_params / total_params)


def performance_memory_efficiency(
    score: float, memory: float, full_finetune_memory: float
) -> float:
    """PME: ``score`` scaled by memory relative to full fine-tuning (FPT §3.2).

    ``memory`` and ``full_finetune_memory`` must share a unit and a device
    (e.g. peak MB of one training step at the same batch size).
    """
    if full_finetune_memory <= 0:
        raise ValueError(
            f"full fine-tuning memory must be > 0, found {full_finetune_memory}"
        )
    return efficiency_scaled(score, memory / full_finetune_memory)
