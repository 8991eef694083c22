"""Important-token selection and K/V capture from the frozen ViT (FPT §2.4, Eq. 4)."""

from __future__ import annotations

import pytest
import torch

from fedmed.tasks.fpt.config import FptConfig
from fedmed.tasks.fpt.frozen import (
    FrozenKV,
    create_vit,
    num_selected_tokens,
    select_important_tokens,
)


def _brute_force_top_tokens(q, k, ratio, scale):
    """Per (image, head): indices of the tokens with the highest mean attention."""
    batch, heads, tokens, _ = k.shape
    keep = max(1, int(tokens * ratio))
    chosen = {}
    for b in range(batch):
        for h in range(heads):
            received = [0.0] * tokens
            for i in range(tokens):
                row = torch.softmax(q[b, h, i] @ k[b, h].T * scale, dim=0)
                for j in range(tokens):
                    received[j] += float(row[j]) / tokens
            ranked = sorted(range(tokens), key=lambda j: received[j], reverse=True)
            chosen[b, h] = set(ranked[:keep])
    return chosen


@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_selection_returns_exactly_the_top_scoring_tokens(ratio):
    # Prepare
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 8, generator=generator) for _ in range(3))
    # Execute
    k_sel, v_sel, index = select_important_tokens(q, k, v, ratio, scale=8**-0.5)
    # Assert
    expected = _brute_force_top_tokens(q, k, ratio, 8**-0.5)
    keep = num_selected_tokens(17, ratio)
    assert index.shape == (2, 3, keep)
    for (b, h), tokens in expected.items():
        assert set(index[b, h].tolist()) == tokens
        for slot, token in enumerate(index[b, h].tolist()):
            assert torch.equal(k_sel[b, h, slot], k[b, h, token])
            assert torch.equal(v_sel[b, h, slot], v[b, h, token])


def test_full_ratio_keeps_every_token_in_order():
    # Prepare
    q, k, v = (torch.randn(1, 2, 5, 4) for _ in range(3))
    # Execute
    k_sel, v_sel, index = select_important_tokens(q, k, v, 1.0, scale=0.5)
    # Assert
    assert torch.equal(k_sel, k) and torch.equal(v_sel, v)
    assert index[0, 1].tolist() == [0, 1, 2, 3, 4]


def test_paper_token_count_for_vit_b_at_512():
    # 32 x 32 patches + CLS = 1025 tokens, 20% -> 205 (authors' int(N * ratio))
    assert num_selected_tokens(1025, 0.2) == 205


def test_frozen_kv_equals_the_layers_own_keys_and_values():
    # Prepare: a tiny ViT; keep every token so the values can be compared directly
    cfg = FptConfig(
        frozen_depth=2, frozen_embed_dim=32, frozen_num_heads=4, high_res=32
    )
    vit = create_vit(cfg, seed=0)
    images = torch.randn(2, 3, 32, 32)
    # Execute
    keys, values = FrozenKV(vit, token_ratio=1.0)(images)
    # Assert: recompute layer 1's K/V by hand from its input
    with torch.no_grad():
        x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
        x = vit.blocks[0](x)
        qkv = vit.blocks[1].attn.qkv(vit.blocks[1].norm1(x))
    qkv = qkv.reshape(2, 5, 3, 4, 8).permute(2, 0, 3, 1, 4)
    assert keys.shape == (2, 2, 4, 5, 8)
    torch.testing.assert_close(keys[:, 1], qkv[1])
    torch.testing.assert_close(values[:, 1], qkv[2])
