"""Fine-grained prompts and the fine-grained fusion module (FPT §2.3, Eq. 3-4).

At every layer l, ``M`` learnable prompts of the side width are mapped to the
frozen width by ``f_in`` and used as queries of a cross-attention whose keys
and values are the frozen layer's own K/V maps (reused, never recomputed):
``CA(z_p, z_M) = Attn(f_in(z_p), K_M, V_M)``. The result is mapped back by
``f_out``, optionally added to the prompts (the authors' later skip
connection), passed through dropout and concatenated to the side sequence.
Eq. 3 writes ``f_out`` around the concatenation; the authors' code applies it
to the cross-attention output only, as done here. ``f_in`` and ``f_out`` are
shared by all layers, also as in the authors' code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PROMPT_INIT_STD = 1e-6


class FineGrainedFusion(nn.Module):
    """Prompts of every layer plus the shared ``f_in`` / ``f_out`` projections."""

    def __init__(
        self,
        num_layers: int,
        num_prompts: int,
        side_dim: int,
        frozen_dim: int,
        num_heads: int,
        dropout: float = 0.5,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if frozen_dim % num_heads:
            raise ValueError(
                f"frozen width {frozen_dim} is not divisible by {num_heads} heads"
            )
        self.num_heads = num_heads
        self.residual = residual
        self.prompts = nn.Parameter(
            torch.randn(num_layers, num_prompts, side_dim) * PROMPT_INIT_STD
        )
        self.prompt_in = nn.Linear(side_dim, frozen_dim)
        self.prompt_out = nn.Linear(frozen_dim, side_dim)
        self.dropout = nn.Dropout(dropout)

    @property
    def num_prompts(self) -> int:
        return self.prompts.shape[1]

    def forward(self, layer: int, keys: Tensor, values: Tensor) -> Tensor:
        """Fused prompts of ``layer``: ``(B, M, side_dim)``.

        Args:
            layer: index of the side/frozen layer.
            keys: frozen keys of the selected tokens ``(B, H, T, D)``.
            values: frozen values ``(B, H, T, D)`` (fp16 from the cache is fine).
        """
        batch, heads, _, head_dim = keys.shape
        if heads != self.num_heads:
            raise ValueError(f"expected K/V with {self.num_heads} heads, found {heads}")
        prompts = self.prompts[layer]
        queries = self.prompt_in(prompts).reshape(-1, heads, head_dim).transpose(0, 1)
        queries = queries.unsqueeze(0).expand(batch, -1, -1, -1)
        context = F.scaled_dot_product_attention(
            queries, keys.to(queries.dtype), values.to(queries.dtype)
        )
        fused = self.prompt_out(
            context.transpose(1, 2).reshape(batch, -1, heads * head_dim)
        )
        if self.residual:
            fused = fused + prompts
        return self.dropout(fused)
