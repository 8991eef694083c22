"""SeLoRA layers: peft LoRA layers whose rank grows without changing the output.

SeLoRA (Mao et al. 2024, Eq. 2) expands a rank-r adapter to r + 1 by
appending a Kaiming-uniform row K to A and a zero column to B, so that
``B' A' = [B 0][A; K] = B A``: the layer's output is unchanged at the moment
of expansion while the new column of B still receives gradient.

The adapters are peft ``LoraLayer`` modules (adapter name ``"default"``);
peft's method registry is closed, so a SeLoRA adapter is a LoRA adapter whose
per-layer ranks travel as ``rank_pattern``. Unlike peft's ``alpha / r``, the
scaling stays fixed at its initial value after an expansion (as in the
authors' code); ``lora_alpha`` is kept equal to ``scaling * r`` so peft's own
bookkeeping (and an exported ``alpha_pattern``) reproduces that scaling.
"""

from __future__ import annotations

import math

import torch
from peft.tuners.lora import LoraLayer
from torch import Tensor, nn
from torch.optim import Optimizer

ADAPTER = "default"
KAIMING_A = math.sqrt(5)  # same distribution as peft's initial LoRA A
#: Root-mean-square norm of a Kaiming-uniform row of A (gain sqrt(2 / (1 + a^2));
#: each of the ``in`` entries has variance gain^2 / in), whatever ``in`` is.
KAIMING_ROW_NORM = math.sqrt(2.0 / (1 + KAIMING_A**2))


def lora_layers(model: nn.Module) -> dict[str, LoraLayer]:
    """Every peft LoRA linear layer with the default adapter, by name (no AdaLoRA)."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer)
        and ADAPTER in module.lora_A
        and isinstance(module.lora_A[ADAPTER], nn.Linear)
    }


def layer_rank(layer: LoraLayer) -> int:
    """Current rank of a layer's default adapter."""
    return int(layer.lora_A[ADAPTER].weight.shape[0])


def layer_ranks(model: nn.Module) -> dict[str, int]:
    """Current rank of every LoRA layer in ``model``."""
    return {name: layer_rank(layer) for name, layer in lora_layers(model).items()}


def kaiming_row(
    in_features: int, generator: torch.Generator | None = None, dtype=torch.float32
) -> Tensor:
    """A new row K of A, Kaiming-uniform over ``in_features`` (SeLoRA Eq. 2)."""
    bound = KAIMING_ROW_NORM * math.sqrt(3.0 / in_features)
    row = torch.rand(1, in_features, generator=generator, dtype=torch.float64)
    return ((row * 2 - 1) * bound).to(dtype)


def reset_lora_init(model: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every A with :func:`kaiming_row` and zero every B, from ``generator``.

    peft initialises A from the global RNG; drawing from an explicit generator
    makes the adapters identical on every site for a given seed.
    """
    with torch.no_grad():
        for layer in lora_layers(model).values():
            a = layer.lora_A[ADAPTER].weight
            rows = [kaiming_row(a.shape[1], generator) for _ in range(a.shape[0])]
            a.copy_(torch.cat(rows).to(a.dtype))
            layer.lora_B[ADAPTER].weight.zero_()


def _set_factors(layer: LoraLayer, a: Tensor, b: Tensor) -> tuple[nn.Parameter, ...]:
    """Install new A (r, in) and B (out, r) parameters; keep the scaling fixed."""
    lora_a, lora_b = layer.lora_A[ADAPTER], layer.lora_B[ADAPTER]
    old = (lora_a.weight, lora_b.weight)
    requires_grad = old[0].requires_grad
    rank = a.shape[0]
    lora_a.weight = nn.Parameter(a.to(old[0]), requires_grad=requires_grad)
    lora_b.weight = nn.Parameter(b.to(old[1]), requires_grad=requires_grad)
    lora_a.out_features = rank
    lora_b.in_features = rank
    layer.r[ADAPTER] = rank
    layer.lora_alpha[ADAPTER] = layer.scaling[ADAPTER] * rank
    return old


def expand_layer(
    layer: LoraLayer, new_row: Tensor, optimizer: Optimizer | None = None
) -> None:
    """Grow a layer from rank r to r + 1 with A' = [A; K], B' = [B, 0] (SeLoRA Eq. 2).

    The optimizer (if given) is pointed at the new parameters; its state for
    the old entries is kept and the new row/column start from zero moments.
    """
    a = layer.lora_A[ADAPTER].weight.detach()
    b = layer.lora_B[ADAPTER].weight.detach()
    if new_row.shape != (1, a.shape[1]):
        raise ValueError(
            f"new row of A must have shape (1, {a.shape[1]}), "
            f"found {tuple(new_row.shape)}"
        )
    new_a = torch.cat([a, new_row.to(a)], dim=0)
    new_b = torch.cat(
        [b, torch.zeros(b.shape[0], 1, dtype=b.dtype, device=b.device)], 1
    )
    old_a, old_b = _set_factors(layer, new_a, new_b)
    if optimizer is not None:
        swap_parameter(optimizer, old_a, layer.lora_A[ADAPTER].weight, grow_dim=0)
        swap_parameter(optimizer, old_b, layer.lora_B[ADAPTER].weight, grow_dim=1)


def resize_layer(layer: LoraLayer, rank: int) -> None:
    """Give a layer zero factors of ``rank`` (values are loaded right after).

    Used when an aggregate arrives with another rank than the local adapter;
    the caller builds its optimizer afterwards.
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1, found {rank}")
    a = layer.lora_A[ADAPTER].weight
    b = layer.lora_B[ADAPTER].weight
    if a.shape[0] == rank:
        return
    _set_factors(
        layer,
        torch.zeros(rank, a.shape[1], dtype=a.dtype, device=a.device),
        torch.zeros(b.shape[0], rank, dtype=b.dtype, device=b.device),
    )


def swap_parameter(
    optimizer: Optimizer, old: nn.Parameter, new: nn.Parameter, grow_dim: int
) -> None:
    """Replace ``old`` by the larger ``new`` in ``optimizer`` (matched by identity).

    Per-parameter state tensors shaped like ``old`` (Adam's ``exp_avg`` and
    ``exp_avg_sq``, ``max_exp_avg_sq``) are zero-padded along ``grow_dim`` so
    old entries keep their moments and new entries start fresh; scalar state
    such as ``step`` is kept.
    """
    found = False
    for group in optimizer.param_groups:
        for i, param in enumerate(group["params"]):
            if param is old:
                group["params"][i] = new
                found = True
    if not found:
        raise KeyError(
            f"parameter of shape {tuple(old.shape)} is not in the optimizer; build the "
            "optimizer over the model's trainable parameters before expanding"
        )
    state = optimizer.state.pop(old, None)
    if not state:
        return
    padded = {}
    for key, value in state.items():
        if torch.is_tensor(value) and value.shape == old.shape:
            pad_shape = list(value.shape)
            pad_shape[grow_dim] = new.shape[grow_dim] - old.shape[grow_dim]
            zeros = torch.zeros(pad_shape, dtype=value.dtype, device=value.device)
            value = torch.cat([value, zeros], dim=grow_dim)
        padded[key] = value
    optimizer.state[new] = padded
