"""Fixed-point codec: round trip within half a step, no wrap, no silent clipping."""

from __future__ import annotations

import numpy as np
import pytest

from fedmed.privacy import FixedPointCodec, ValueOutOfRange


@pytest.mark.parametrize("bits", [32, 64])
def test_round_trip_is_within_half_a_step(bits):
    # Prepare
    codec = FixedPointCodec(bits=bits, value_range=3.0, num_summands=4)
    values = np.random.default_rng(0).uniform(-3, 3, size=1000)
    # Execute
    decoded = codec.decode(codec.encode(values))
    # Assert
    assert np.abs(decoded - values).max() <= 0.5 / codec.scale + 1e-15


@pytest.mark.parametrize("bits", [32, 64])
def test_sum_of_extreme_values_does_not_wrap(bits):
    # Prepare
    codec = FixedPointCodec(bits=bits, value_range=2.0, num_summands=5)
    encoded = [codec.encode(np.array([2.0, -2.0])) for _ in range(5)]
    # Execute
    total = encoded[0].copy()
    for e in encoded[1:]:
        total += e
    # Assert
    np.testing.assert_allclose(codec.decode(total), [10.0, -10.0], rtol=1e-9)


@pytest.mark.parametrize("bad", [2.5, -7.0, np.nan, np.inf])
def test_out_of_range_value_is_reported_not_clipped(bad):
    # Prepare
    codec = FixedPointCodec(bits=32, value_range=2.0, num_summands=3)
    values = np.zeros(70_000)  # spans more than one encoding chunk
    values[68_123] = bad
    # Execute / Assert
    with pytest.raises(ValueOutOfRange, match="party 7") as caught:
        codec.encode(values, party=7)
    assert caught.value.index == 68_123
    assert caught.value.party == 7
    assert np.isnan(caught.value.value) if np.isnan(bad) else caught.value.value == bad


def test_codec_refuses_a_single_summand():
    # Execute / Assert
    with pytest.raises(ValueError, match="num_summands must be >= 2"):
        FixedPointCodec(bits=32, value_range=1.0, num_summands=1)
