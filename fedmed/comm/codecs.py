"""Wire codecs for exchanged tensors: fp32, fp16 and per-tensor int8.

Encoding turns a ``str -> Tensor`` state into ``str -> ndarray`` ready for a
Flower ``ArrayRecord``; decoding gives float32 tensors back. int8 is
symmetric per-tensor quantisation (scale = max|x| / 127) with the scale sent
as a float32 scalar array under ``<name>@scale``, so a receiver needs nothing
but the arrays.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

CODECS = ("fp32", "fp16", "int8")
SCALE_SUFFIX = "@scale"


def encode(state: Mapping[str, Tensor], codec: str) -> dict[str, np.ndarray]:
    """Encode float tensors for the wire with ``codec``."""
    if codec not in CODECS:
        raise ValueError(
            f"unknown comm-dtype {codec!r}; use one of {', '.join(CODECS)}"
        )
    out: dict[str, np.ndarray] = {}
    for name, tensor in state.items():
        if SCALE_SUFFIX in name:
            raise ValueError(
                f"tensor name {name!r} uses the reserved suffix {SCALE_SUFFIX}"
            )
        array = tensor.detach().to("cpu", torch.float32).numpy()
        if codec == "fp32":
            out[name] = np.ascontiguousarray(array)
        elif codec == "fp16":
            out[name] = array.astype(np.float16)
        else:
            peak = float(np.abs(array).max()) if array.size else 0.0
            scale = peak / 127.0 if peak > 0 else 1.0
            out[name] = np.clip(np.rint(array / scale), -127, 127).astype(np.int8)
            out[name + SCALE_SUFFIX] = np.asarray([scale], dtype=np.float32)
    return out


def decode(arrays: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
    """Inverse of :func:`encode`: float32 tensors, int8 rescaled."""
    state: dict[str, Tensor] = {}
    for name, array in arrays.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        values = np.asarray(array)
        if values.dtype == np.int8:
            scale_key = name + SCALE_SUFFIX
            if scale_key not in arrays:
                raise ValueError(f"int8 tensor {name!r} arrived without {scale_key!r}")
            values = values.astype(np.float32) * np.asarray(arrays[scale_key])[0]
        elif not np.issubdtype(values.dtype, np.floating):
            raise ValueError(f"tensor {name!r} has non-float wire dtype {values.dtype}")
        state[name] = torch.from_numpy(np.array(values, dtype=np.float32))
    return state


def bytes_per_element(codec: str) -> int:
    """Wire size of one element under ``codec``."""
    return {"fp32": 4, "fp16": 2, "int8": 1}[codec]
