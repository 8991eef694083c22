"""Secure vs plain aggregation against the number of clients, vector size and dropouts.

The measurement itself is :func:`fedmed.bench.secagg_protocol.measure`
``(n, dim, fraction, repeats)`` (fedmed.privacy's Bonawitz et al. 2017 protocol:
X25519 + HKDF pairwise masks, Shamir-shared seeds for dropout recovery,
fixed-point ring): it times one secure round's critical path against plain
fp32 summation and counts the payload bytes of every round message. This
module sweeps it over 2 -> 50 clients, several vector sizes and 0 / 10 / 30 %
dropouts (dropped parties vanish after key setup, before sending their
masked input), and keeps the rows for the ``fedmed bench`` table and plot.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fedmed.bench.secagg_protocol import measure

log = logging.getLogger(__name__)

DROPOUTS = (0.0, 0.1, 0.3)


def grid(quick: bool) -> list[tuple[int, int]]:
    """``(clients, vector size)`` pairs to measure."""
    if quick:
        return [(n, 3584) for n in (2, 5, 10, 20, 50)] + [(10, 65_536)]
    small = [(n, d) for n in (2, 5, 10, 20, 30, 50) for d in (3584, 65_536)]
    return small + [(n, 1_000_000) for n in (2, 10, 20)]


def run_secagg(quick: bool, work_dir: Path) -> tuple[list[dict], dict]:
    """One row per (clients, size, dropout fraction); all in memory, no work files.

    ``work_dir`` is accepted for the common bench signature and left unused.
    """
    measure(2, 64, 0.0, 1)  # warm-up, discarded: first use of the crypto paths
    rows = []
    for clients, dim in grid(quick):
        for fraction in DROPOUTS:
            repeats = 1 if quick else (2 if clients * dim > 5_000_000 else 3)
            row = measure(clients, dim, fraction, repeats)
            rows.append({"clients": row.pop("providers"), **row})
            log.info(
                "secagg n=%d d=%d drop=%.1f: time x%.1f bytes x%.3f",
                clients,
                dim,
                fraction,
                rows[-1]["time_ratio"],
                rows[-1]["bytes_ratio"],
            )
    return rows, {
        "source": "fedmed.bench.secagg_protocol.measure()",
        "dropouts": list(DROPOUTS),
    }
