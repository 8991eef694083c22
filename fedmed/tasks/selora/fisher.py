"""Fisher-information scores of SeLoRA adapters and of their expansion candidates.

SeLoRA (Mao et al. 2024) decides to grow a layer from the empirical Fisher
information of its factors (Eq. 3, the mean over a batch of squared
per-sample gradients), summed over every entry of A and B (Eq. 4, the
FI-Score), for the current adapter and for the candidate with one more rank
A' = [A; K], B' = [B, 0]. The layer expands when FI-Score(candidate) /
FI-Score(current) >= lambda (the printed Eq. 5 has the ratio upside down; the
authors' code and the algorithm's intent use candidate / current).

Per-sample gradients come from two hooks per layer and need no extra
backward pass: the input ``x`` of ``lora_A`` and the gradient ``g`` of the
loss with respect to the output of ``lora_B``. With ``h = A x`` and summing
over tokens ``t`` of sample ``i``:

    dL_i/dB = sum_t g_t h_t^T,  dL_i/dA = sum_t (B^T g_t) x_t^T,
    dL_i/db_new = sum_t g_t (K x_t),  dL_i/dK = 0 (its B column is zero),

so the candidate's gradients on its old entries equal the current ones and its
score is the current score plus that of the new B column.

``mode="batch"`` reproduces the authors' released code instead: the squared
norm of the batch-mean gradient (no per-sample terms).

Factorisation. Eq. 4 sums over the entries of A and B, so it changes when the
same update ΔW = B A is written as (M A, B M⁻¹): scaling A by s scales
dL/dB by s and dL/dA by 1/s, while the candidate's new column does not move.
Aggregation re-factorises every layer; when it left A rows at 0.1x the
Kaiming norm, the Kaiming candidate dominated the FI-Ratio (tiny config, two
sites, one round: median ratio 2.8 and 45 of 48 layers growing at the next
check, against 1.3 and 38 of 48 for the same ΔW in the factorisation below).
The scores are therefore taken in one canonical factorisation of the layer's
adapter: A_c = c Qᵀ with Q an orthonormal basis of A's row space and c the
norm of a Kaiming row of A (:data:`~fedmed.tasks.selora.layer.KAIMING_ROW_NORM`),
and B_c = ΔW Q / c.
Existing ranks then sit at the candidate's scale, and scores and decisions
depend only on ΔW and A's row space (which ΔW fixes whenever it has full rank
r), never on how the factors are scaled or mixed. For a freshly initialised
layer (Kaiming rows, nearly orthogonal) this is the paper's score.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from peft.tuners.lora import LoraLayer
from torch import Tensor

from fedmed.tasks.selora.layer import ADAPTER, KAIMING_ROW_NORM

FisherMode = Literal["per-sample", "batch"]


@dataclass(frozen=True)
class FisherScores:
    """FI-Scores (SeLoRA Eq. 4) of a layer's adapter and its expansion candidate."""

    current: float
    candidate: float

    @property
    def ratio(self) -> float:
        """FI-Ratio, candidate over current; ``inf`` when only the candidate scores."""
        if self.current > 0:
            return self.candidate / self.current
        return float("inf") if self.candidate > 0 else 0.0


def canonical_factors(
    a: Tensor, b: Tensor, row_norm: float = KAIMING_ROW_NORM
) -> tuple[Tensor, Tensor]:
    """(A_c, B_c) with B_c A_c = B A and A_c's rows orthonormal, times ``row_norm``.

    With Aᵀ = Q R (thin QR), A_c = row_norm Qᵀ and B_c = B Rᵀ / row_norm. Any
    (M A, B M⁻¹) with M invertible gives the same A_c and B_c up to an
    orthogonal rotation of the rank dimension, which no FI-Score sees.
    """
    q, r = torch.linalg.qr(a.double().T)
    a_c = row_norm * q.T
    b_c = (b.double() @ r.T) / row_norm
    return a_c.to(a.dtype), b_c.to(b.dtype)


def per_sample_gradients(
    x: Tensor, g: Tensor, a: Tensor, b: Tensor, k: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample gradients of A (n, r, in), B (n, out, r), new B column (n, out).

    ``x`` (n, t, in) is the adapter input, ``g`` (n, t, out) the gradient with
    respect to ``lora_B``'s output, ``k`` (1, in) the candidate row of A.
    """
    h = x @ a.T
    grad_b = torch.einsum("nto,ntr->nor", g, h)
    grad_a = torch.einsum("ntr,nti->nri", g @ b, x)
    grad_new = torch.einsum("nto,nt->no", g, (x @ k.T).squeeze(-1))
    return grad_a, grad_b, grad_new


def _squared(t: Tensor) -> Tensor:
    return t.pow(2).flatten(1).sum(1)


class FisherProbe:
    """Hooks that capture what Eqs. 3-4 need during one forward/backward pass.

    Use as a context manager around the forward and backward of a batch whose
    loss is the mean of per-sample losses; then :meth:`scores` returns each
    layer's :class:`FisherScores`. ``candidates`` holds the row K each layer
    would get if it expanded, so the decision and the expansion use the same K.
    Gradients are those of the canonical factors (:func:`canonical_factors`)
    of each layer's weights when the probe is entered.
    """

    def __init__(
        self,
        layers: Mapping[str, LoraLayer],
        candidates: Mapping[str, Tensor],
        mode: FisherMode = "per-sample",
    ) -> None:
        if mode not in ("per-sample", "batch"):
            raise ValueError(
                f"fisher mode must be 'per-sample' or 'batch', found {mode!r}"
            )
        self.layers = dict(layers)
        self.candidates = dict(candidates)
        self.mode = mode
        self._inputs: dict[str, list[Tensor | None]] = {n: [] for n in self.layers}
        self._sums: dict[str, list[Tensor]] = {}
        self._factors: dict[str, tuple[Tensor, Tensor]] = {}
        self._handles: list = []

    def __enter__(self) -> FisherProbe:
        for name, layer in self.layers.items():
            self._factors[name] = canonical_factors(
                layer.lora_A[ADAPTER].weight.detach(),
                layer.lora_B[ADAPTER].weight.detach(),
            )
            self._handles.append(
                layer.lora_A[ADAPTER].register_forward_hook(self._input_hook(name))
            )
            self._handles.append(
                layer.lora_B[ADAPTER].register_forward_hook(self._output_hook(name))
            )
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _input_hook(self, name: str):
        def hook(module, inputs, output):
            self._inputs[name].append(inputs[0].detach())

        return hook

    def _output_hook(self, name: str):
        def hook(module, inputs, output):
            if output.requires_grad:
                call = len(self._inputs[name]) - 1
                output.register_hook(lambda grad: self._accumulate(name, call, grad))

        return hook

    def _accumulate(self, name: str, call: int, grad: Tensor) -> None:
        """Add one call's per-sample gradients as soon as its output gradient exists."""
        a, b = self._factors[name]
        x, self._inputs[name][call] = self._inputs[name][call], None
        n = x.shape[0]
        x3 = x.reshape(n, -1, x.shape[-1]).to(a)
        g3 = grad.detach().reshape(n, -1, grad.shape[-1]).to(a)
        parts = per_sample_gradients(x3, g3, a, b, self.candidates[name].to(a))
        if name in self._sums:
            for acc, part in zip(self._sums[name], parts, strict=True):
                acc += part
        else:
            self._sums[name] = list(parts)

    def scores(self, batch_size: int) -> dict[str, FisherScores]:
        """FI-Scores per layer from the captured pass (``batch_size`` samples)."""
        return {name: self._layer_scores(name, batch_size) for name in self.layers}

    def _layer_scores(self, name: str, batch_size: int) -> FisherScores:
        if name not in self._sums:
            return FisherScores(current=0.0, candidate=0.0)
        grad_a, grad_b, grad_new = self._sums[name]
        if grad_a.shape[0] != batch_size:
            raise ValueError(
                f"layer {name} saw {grad_a.shape[0]} samples per call, expected "
                f"{batch_size}; the probe needs the batch on the first dimension"
            )
        if self.mode == "batch":
            current = grad_a.sum(0).pow(2).sum() + grad_b.sum(0).pow(2).sum()
            new = grad_new.sum(0).pow(2).sum()
        else:
            # the loss is a batch mean, so a sample's own gradient is n times its share
            n2 = float(batch_size) ** 2
            current = (_squared(grad_a) + _squared(grad_b)).mean() * n2
            new = _squared(grad_new).mean() * n2
        return FisherScores(current=float(current), candidate=float(current + new))
