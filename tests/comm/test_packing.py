"""fedmed/wire/packing.py: a tensor state as one array, read back only if sound."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from fedmed.wire import arrays_to_record, describe_payload, record_to_state
from fedmed.wire.packing import MAGIC, pack_arrays, packed_layout, unpack_arrays
from fedmed.wire.records import PACKED, state_to_record


def lora_state(tensors: int = 12) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        f"blocks.{k}.attn.qkv.lora_{'AB'[k % 2]}": torch.randn(4, 3 + k, generator=gen)
        for k in range(tensors)
    }


@pytest.mark.parametrize("codec", ["fp32", "fp16", "int8"])
def test_a_state_round_trips_through_one_packed_array(codec):
    state = lora_state()
    record = state_to_record(state, codec)
    assert list(record) == [PACKED]
    back = record_to_state(record)
    assert list(back) == list(state)
    tolerance = {"fp32": 0.0, "fp16": 1e-3, "int8": 0.05}[codec]
    for name, tensor in state.items():
        assert back[name].shape == tensor.shape and back[name].dtype == torch.float32
        torch.testing.assert_close(back[name], tensor, atol=tolerance, rtol=0)


def test_mixed_dtypes_and_empty_arrays_keep_their_values():
    arrays = {
        "a": np.arange(5, dtype=np.int64),
        "b": np.zeros((0, 3), dtype=np.float32),
        "c": np.array([[1.5, -2.0]], dtype=np.float16),
        "d": np.array([True, False]),
    }
    back = unpack_arrays(pack_arrays(arrays))
    assert list(back) == list(arrays)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        np.testing.assert_array_equal(back[name], array)
        assert back[name].flags.writeable


def test_a_message_carries_a_few_objects_whatever_its_tensor_count():
    # A deployed SuperNode fetches every object of a message with its own
    # request: per-tensor arrays cost two objects each, a packed state two
    def objects(record: ArrayRecord) -> int:
        content = RecordDict({"arrays": record, "config": ConfigRecord()})
        return len(get_all_nested_objects(content))

    state = lora_state(12)
    per_tensor = objects(arrays_to_record({k: v.numpy() for k, v in state.items()}))
    packed = objects(state_to_record(state, "fp32"))
    assert per_tensor == packed + 2 * 12 - 2
    assert packed <= 5


def test_the_ledger_still_names_every_tensor_and_its_bytes():
    state = lora_state(3)
    shape = describe_payload(RecordDict({"arrays": state_to_record(state, "fp32")}))
    sizes = shape["arrays"]
    assert {k: v for k, v in sizes.items() if k != PACKED} == {
        name: t.numel() * 4 for name, t in state.items()
    }
    assert 0 < sizes[PACKED] < 512  # header, padding and numpy's array header


def forged(
    entries: list, payload: bytes = b"\0" * 64, header_len: int | None = None
) -> np.ndarray:
    header = json.dumps(entries).encode()
    length = len(header) if header_len is None else header_len
    prefix = struct.pack("<4sI", MAGIC, length) + header
    prefix += b"\0" * (-len(prefix) % 8)
    return np.frombuffer(prefix + payload, dtype=np.uint8)


@pytest.mark.parametrize(
    "buffer, complaint",
    [
        (np.frombuffer(b"NOPE" + b"\0" * 16, dtype=np.uint8), "not a packed"),
        (forged([], header_len=10**9), "header length"),
        (forged({"a": 1}), "not a list"),
        (forged([["w", "object", [2], 0, 16]]), "dtype"),
        (forged([["w", "float32", [2, -1], 0, 8]]), "shape"),
        (forged([["w", "float32", [4], 0, 8]]), "does not match"),
        (forged([["w", "float32", [32], 0, 128]]), "outside"),
        (forged([["w", "float32", [2], 0, 8], ["v", "float32", [2], 4, 8]]), "outside"),
        (forged([["w", "float32", [2], 0, 8], ["w", "float32", [2], 8, 8]]), "twice"),
        (forged([["w", "float32", [2], -8, 8]]), "offset"),
    ],
)
def test_a_forged_buffer_is_refused_with_a_reason(buffer, complaint):
    with pytest.raises(ValueError, match=complaint):
        packed_layout(buffer)


def test_a_packed_state_with_company_in_its_record_is_refused():
    record = state_to_record(lora_state(2), "fp32")
    record["extra"] = arrays_to_record({"x": np.zeros(2, np.float32)})["x"]
    with pytest.raises(ValueError, match="alone"):
        record_to_state(record)


def test_the_ledger_counts_an_unreadable_packed_array_whole():
    # a site's reply with a forged header is refused where it is read; the
    # ledger still counts its bytes, under the packed array's name
    array = Array(forged([["w", "float32", [32], 0, 128]]))
    shape = describe_payload(RecordDict({"arrays": ArrayRecord({PACKED: array})}))
    assert shape["arrays"] == {PACKED: len(array.data)}
    with pytest.raises(ValueError, match="outside"):
        record_to_state(ArrayRecord({PACKED: array}))
