"""Choosing, validating and applying the tensors a site exchanges.

Every task's ``exchanged`` / ``load_exchanged`` goes through these functions,
so the rules "only trainable tensors leave a site" and "an aggregate with the
wrong keys, shapes or non-finite values never touches the model" live in one
place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn


class UpdateRejected(ValueError):
    """An exchanged state (from a peer or the server) failed validation."""


def trainable_state(model: nn.Module, extra: Iterable[str] = ()) -> dict[str, Tensor]:
    """Detached copies of every parameter with ``requires_grad`` (plus ``extra``).

    ``extra`` names non-trainable tensors that must still travel, such as
    batch-norm running statistics of a trainable head.
    """
    state = {
        name: param.detach().clone()
        for name, param in model.named_parameters()
        if param.requires_grad
    }
    if extra:
        full = model.state_dict()
        for name in extra:
            state[name] = full[name].detach().clone()
    return state


def frozen_names(model: nn.Module) -> set[str]:
    """Names of parameters that do not train (the backbone that must stay home)."""
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def validate_state(
    expected: Mapping[str, Tensor],
    received: Mapping[str, Tensor],
    source: str = "update",
) -> None:
    """Raise :class:`UpdateRejected` unless ``received`` matches ``expected``.

    Checks: identical key sets, identical shapes, floating dtypes, finite values.
    The message names the first offending tensor and what was expected.
    """
    missing = sorted(set(expected) - set(received))
    extra = sorted(set(received) - set(expected))
    if missing or extra:
        raise UpdateRejected(
            f"{source}: keys differ from the model's exchanged tensors "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''})"
        )
    for name, ref in expected.items():
        value = received[name]
        if tuple(value.shape) != tuple(ref.shape):
            raise UpdateRejected(
                f"{source}: tensor {name!r} has shape {tuple(value.shape)}, "
                f"expected {tuple(ref.shape)}"
            )
        if not torch.is_floating_point(value):
            raise UpdateRejected(f"{source}: tensor {name!r} has dtype {value.dtype}")
        if not torch.isfinite(value).all():
            raise UpdateRejected(f"{source}: tensor {name!r} contains NaN or Inf")


def load_state(
    model: nn.Module, state: Mapping[str, Tensor], expected: Mapping[str, Tensor]
) -> None:
    """Validate ``state`` against ``expected`` and copy it into ``model`` in place."""
    validate_state(expected, state, source="aggregate")
    targets = dict(model.named_parameters())
    targets.update(dict(model.named_buffers()))
    with torch.no_grad():
        for name, value in state.items():
            target = targets[name]
            target.copy_(value.to(dtype=target.dtype, device=target.device))
