"""Wire messages: flat arrays only, lossless round trips, malformed input refused."""

from __future__ import annotations

import numpy as np
import pytest

from fedmed.privacy import MessageFormatError, setup_inprocess
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
        recipients=(1, 2),
        ciphertexts=(bytes(44), bytes(range(44))),
    )
    # Execute
    arrays = message.to_arrays()
    restored = MaskedInput.from_bytes(message.to_bytes())
    # Assert
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    assert restored.ciphertexts == message.ciphertexts
    assert (restored.sender, restored.round_id, restored.value_range) == (4, 9, 2.5)
    np.testing.assert_array_equal(restored.masked, message.masked)


def test_wrong_dtype_or_missing_key_is_refused():
    # Prepare
    arrays = UnmaskResponse(1, 2, (1,), (5,), (), ()).to_arrays()
    wrong_dtype = {**arrays, "self_mask_owners": np.array([1.0])}
    missing = {k: v for k, v in arrays.items() if k != "round_id"}
    # Execute / Assert
    with pytest.raises(
        MessageFormatError, match="self_mask_owners: expected 1-d uint64"
    ):
        UnmaskResponse.from_arrays(wrong_dtype)
    with pytest.raises(MessageFormatError, match="expected arrays"):
        UnmaskResponse.from_arrays(missing)


def test_setup_runs_entirely_through_bytes():
    # Execute
    server, parties = setup_inprocess([5, 6, 7], through_bytes=True)
    # Assert
    assert server.active == (5, 6, 7)
    assert server.directory.threshold == 2
