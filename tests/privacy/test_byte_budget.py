"""Issue 15's byte budget: secure bytes per round within 1.1x / 1.2x of plain fp32."""

from __future__ import annotations

import math

import pytest

from tests.privacy.secagg_bytes import VFL_DIM, measure


@pytest.mark.parametrize(("parties", "budget"), [(10, 1.1), (50, 1.2), (100, 1.2)])
def test_a_vfl_sized_round_stays_within_the_byte_budget(parties, budget):
    # Execute: d = 3584 (VFL-CLIP, 7 x 512), 32-bit ring, every message counted
    row = measure(parties, VFL_DIM)
    # Assert: the round matches the documented wire format, and the budget
    bitmap = math.ceil(parties / 8)
    per_party = (
        (24 + bitmap)  # MaskRequest: run id, round, active bitmap
        + (40 + 4 * VFL_DIM + 32 * row.degree)  # MaskedInput
        + (16 + bitmap + 32 * row.degree)  # UnmaskRequest
        + (16 + 16 * row.degree)  # UnmaskResponse, nobody dropped
    )
    assert row.round_bytes == parties * per_party
    assert row.ratio <= budget
    assert row.setup_bytes == parties * (16 + 40 + 32 + 40 * parties)


def test_a_dropout_adds_only_the_revealed_pair_keys():
    # Prepare
    calm = measure(50)
    # Execute: two parties drop before masking
    stormy = measure(50, dropped=2)
    # Assert: less uploaded, but never more than 1.2x of what plain would send
    assert stormy.round_bytes < calm.round_bytes
    assert stormy.round_bytes <= 1.2 * 48 * VFL_DIM * 4
