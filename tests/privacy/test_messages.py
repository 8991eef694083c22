"""Wire messages: flat arrays only, lossless round trips, malformed input refused."""

from __future__ import annotations

import numpy as np
import pytest

from fedmed.privacy import MessageFormatError, ProtocolError, setup_inprocess
from fedmed.privacy.directory import Directory
from fedmed.privacy.messages import MaskedInput, UnmaskResponse


def test_masked_input_round_trips_through_arrays_and_bytes():
    # Prepare
    message = MaskedInput(
        sender=4,
        round_id=9,
        bits=32,
        value_range=2.5,
        num_summands=3,
        masked=np.arange(5, dtype=np.uint32),
        shares=(bytes(32), bytes(range(32))),
    )
    # Execute
    arrays = message.to_arrays()
    restored = MaskedInput.from_bytes(message.to_bytes())
    # Assert
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    assert arrays["shares"].shape == (2, 32)
    assert restored.shares == message.shares
    assert (restored.sender, restored.round_id, restored.value_range) == (4, 9, 2.5)
    np.testing.assert_array_equal(restored.masked, message.masked)


def test_wrong_dtype_width_or_missing_key_is_refused():
    # Prepare
    arrays = UnmaskResponse(1, 2, (5,), (bytes(32),)).to_arrays()
    wrong_dtype = {**arrays, "self_mask_shares": np.zeros((1, 16), np.float32)}
    wrong_width = {**arrays, "pair_keys": np.zeros((1, 16), np.uint8)}
    missing = {k: v for k, v in arrays.items() if k != "round_id"}
    # Execute / Assert
    with pytest.raises(MessageFormatError, match="self_mask_shares: expected 2-d"):
        UnmaskResponse.from_arrays(wrong_dtype)
    with pytest.raises(MessageFormatError, match="pair_keys: rows must be 32 bytes"):
        UnmaskResponse.from_arrays(wrong_width)
    with pytest.raises(MessageFormatError, match="expected arrays"):
        UnmaskResponse.from_arrays(missing)


def test_setup_runs_entirely_through_bytes():
    # Execute
    server, parties = setup_inprocess([5, 6, 7], through_bytes=True)
    # Assert
    assert server.participants == (5, 6, 7)
    assert (server.directory.degree, server.directory.threshold) == (2, 2)


def test_party_lists_travel_as_bitmaps_over_the_directory():
    # Prepare
    ids = tuple(range(100, 111))
    directory = Directory(b"r" * 16, 7, 10, ids, tuple(bytes([i]) * 32 for i in ids))
    # Execute
    bitmap = directory.bitmap([100, 103, 110])
    # Assert
    assert len(bitmap) == 2
    assert directory.members(bitmap, "x") == (100, 103, 110)
    with pytest.raises(ProtocolError, match="bits set beyond"):
        directory.members(b"\x00\x08", "x")
    with pytest.raises(ProtocolError, match="expected 2"):
        directory.members(b"\x00", "x")
