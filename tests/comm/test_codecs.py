import numpy as np
import pytest
import torch

from fedmed.comm.aggregation import weighted_mean
from fedmed.comm.codecs import decode, encode
from fedmed.comm.selection import UpdateRejected, validate_state


def test_fp16_halves_bytes_and_int8_quarter_with_bounded_error():
    state = {"w": torch.randn(64, 32), "b": torch.randn(32)}
    fp32, fp16, int8 = (encode(state, c) for c in ("fp32", "fp16", "int8"))
    size = lambda a: sum(v.nbytes for v in a.values())  # noqa: E731
    assert size(fp16) * 2 == size(fp32)
    assert size(int8) == size(fp32) // 4 + 2 * 4  # + one float32 scale per tensor
    back = decode(int8)
    step = state["w"].abs().max() / 127
    assert torch.max(torch.abs(back["w"] - state["w"])) <= step / 2 + 1e-6
    torch.testing.assert_close(decode(fp16)["b"], state["b"], atol=2e-3, rtol=1e-3)


def test_weighted_mean_is_exact():
    a, b = {"x": torch.tensor([1.0, 2.0])}, {"x": torch.tensor([4.0, 8.0])}
    out = weighted_mean([a, b], [1, 3])
    np.testing.assert_allclose(out["x"].numpy(), [(1 + 12) / 4, (2 + 24) / 4])


@pytest.mark.parametrize(
    ("received", "message"),
    [
        ({"x": torch.tensor([float("nan"), 1.0])}, "NaN"),
        ({"x": torch.zeros(3)}, "shape"),
        ({"y": torch.zeros(2)}, "keys differ"),
    ],
)
def test_validation_rejects_bad_updates(received, message):
    with pytest.raises(UpdateRejected, match=message):
        validate_state({"x": torch.zeros(2)}, received)
