"""Differential privacy for adapter updates: epsilon and the utility it costs.

Mechanism: central DP with fixed clipping (DP-FedAvg, McMahan et al. 2018),
exactly what Flower's ``DifferentialPrivacyServerSideFixedClipping`` wrapper
does: clip each site's update ``w_i - w`` to L2 norm ``C``, average
uniformly over the ``m`` sites, add Gaussian noise of standard deviation
``sigma * C / m`` to the aggregate (:mod:`fedmed.privacy.dp`).
``strategies/dp.py`` applies it in real runs; this bench runs the same
functions in process (``fedmed.bench.loop``) so the utility curve needs no
runtime start-up.

Epsilon is site-level (adjacent federations differ in one site's data) from
the RDP accountant of ``fedmed.privacy.accountant`` with sampling rate
``fraction-train`` (1.0 here: every site trains every round, no
amplification). The clip norm is the median first-round update norm of the
non-private run: clipping bites about half the first-round updates, fewer
later (updates shrink as training settles; ``clipped_fraction`` says how many).
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

from fedmed.bench.comm import tiny_config
from fedmed.bench.loop import federated_loop
from fedmed.data.synth_dermamnist import synthesize
from fedmed.privacy.accountant import epsilon_after
from fedmed.privacy.dp import CentralDP

log = logging.getLogger(__name__)

DELTA = 1e-5
ACCOUNTANT_SIGMAS = (0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0)
ACCOUNTANT_RATES = (1.0, 0.5, 0.1)


def accountant_rows(rounds: int) -> list[dict]:
    """Epsilon of ``rounds`` rounds for a grid of noise multipliers and rates."""
    return [
        {
            "kind": "accountant",
            "noise_multiplier": sigma,
            "sampling_rate": q,
            "rounds": rounds,
            "delta": DELTA,
            "epsilon": epsilon_after(sigma, rounds, DELTA, q),
        }
        for q in ACCOUNTANT_RATES
        for sigma in ACCOUNTANT_SIGMAS
    ]


def _utility_row(sigma, clip, sites, rounds, result) -> dict:
    final = result.heldout[-1]
    return {
        "kind": "utility",
        "noise_multiplier": sigma,
        "sampling_rate": 1.0,
        "rounds": rounds,
        "delta": DELTA,
        "epsilon": epsilon_after(sigma, rounds, DELTA) if sigma > 0 else None,
        "sites": sites,
        "clip_norm": clip if sigma > 0 else None,
        "heldout_auc": float(final["auc"]),
        "heldout_accuracy": float(final["accuracy"]),
        "mean_update_norm": float(
            statistics.mean(n for norms in result.site_update_norms for n in norms)
        ),
        "clipped_fraction": float(statistics.mean(result.clipped_fraction)),
    }


def run_dp(quick: bool, work_dir: Path) -> tuple[list[dict], dict]:
    """Utility (held-out AUC vs epsilon) and accountant rows, plus per-round curves."""
    sites, rounds, samples = (5, 2, 100) if quick else (12, 10, 300)
    sigmas = (0.5, 1.0, 3.0) if quick else (0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0)
    data = work_dir / "dp-data"
    if not data.exists():
        synthesize(data, sites, samples_per_site=samples, seed=2, heldout_samples=300)
    config = {**tiny_config("classify"), "data-dir": str(data)}
    baseline = federated_loop(config, sites, rounds)
    clip = float(statistics.median(baseline.site_update_norms[0]))
    rows = [_utility_row(0.0, clip, sites, rounds, baseline)]
    curves = {"0": baseline.heldout}
    for sigma in sigmas:
        result = federated_loop(
            config, sites, rounds, dp=CentralDP(sigma, clip, seed=7)
        )
        rows.append(_utility_row(sigma, clip, sites, rounds, result))
        curves[str(sigma)] = result.heldout
        log.info(
            "dp sigma=%s: eps %.3g auc %.3f",
            sigma,
            rows[-1]["epsilon"],
            rows[-1]["heldout_auc"],
        )
    rows += accountant_rows(rounds if quick else 100)
    return rows, {
        "curves": curves,
        "clip_norm": clip,
        "setup": {
            "sites": sites,
            "rounds": rounds,
            "samples_per_site": samples,
            "task": "classify (tiny ViT, LoRA rank 4)",
        },
    }
