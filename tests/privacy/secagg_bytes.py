"""Payload bytes of secure aggregation v2 against plain fp32, per round and party.

Used by ``test_byte_budget.py``; run it directly for the table::

    PYTHONPATH=. python tests/privacy/secagg_bytes.py

Counts every message of both directions as :class:`fedmed.privacy.Traffic`
does (array payload, transport framing excluded). ``plain`` is what plain
aggregation uploads: ``n * d * 4`` bytes (fp32). The setup (key request,
advertisements, and the key directory that rides on each party's first
mask request) happens once per run and is reported apart from a round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedmed.privacy import (
    FixedPointCodec,
    InProcessChannel,
    SecAggParty,
    SecAggServer,
    Traffic,
    run_setup,
    secure_sum,
)

VFL_DIM = 7 * 512  # VFL-CLIP: 7 classes x 512
SETUP_MESSAGES = ("KeyRequest", "KeyAdvertisement", "KeyDirectory")


@dataclass(frozen=True)
class RoundBytes:
    """Bytes of one configuration (steady-state round and the run's setup)."""

    parties: int
    dim: int
    degree: int
    threshold: int
    round_bytes: int
    setup_bytes: int

    @property
    def plain_bytes(self) -> int:
        return self.parties * self.dim * 4

    @property
    def ratio(self) -> float:
        return self.round_bytes / self.plain_bytes

    @property
    def per_party(self) -> float:
        return self.round_bytes / self.parties


def measure(parties: int, dim: int = VFL_DIM, dropped: int = 0) -> RoundBytes:
    """Bytes of round 2 (round 1 carries the directory) and of the setup."""
    rng = np.random.default_rng(parties)
    vectors = {p: rng.uniform(-1, 1, dim) for p in range(parties)}
    codec = FixedPointCodec(32, 1.0, parties)
    setup, steady = Traffic(), Traffic()
    party_objects = {p: SecAggParty(p) for p in range(parties)}
    server = SecAggServer()
    channel = InProcessChannel(party_objects, lambda p, _: vectors[p], codec)
    channel.traffic = setup
    run_setup(server, channel, list(range(parties)))
    secure_sum(server, channel, 1)  # delivers the directory
    channel.traffic = steady
    channel.drop_before_masking = range(dropped)
    total = secure_sum(server, channel, 2)
    plain = sum(vectors[p] for p in total.contributors)
    if np.abs(total.values - plain).max() > parties / codec.scale:
        raise RuntimeError(f"secure sum is off for {parties} parties")
    return RoundBytes(
        parties,
        dim,
        server.directory.degree,
        server.directory.threshold,
        steady.total,
        sum(setup.bytes_by_message[n] for n in SETUP_MESSAGES),
    )


def main() -> None:
    print("  n   k   t  bytes/party/round  secure/plain  setup bytes (once)")
    for n in (10, 50, 100):
        row = measure(n)
        print(
            f"{n:3d} {row.degree:3d} {row.threshold:3d} {row.per_party:18.0f} "
            f"{row.ratio:13.4f} {row.setup_bytes:19d}"
        )


if __name__ == "__main__":
    main()
