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


def _layer_queries_and_keys(vit, images):
    """Every layer's own queries and keys ``(B, H, N, D)``, recomputed by hand."""
    pairs = []
    with torch.no_grad():
        x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
        for block in vit.blocks:
            attn = block.attn
            qkv = attn.qkv(block.norm1(x))
            shape = (*qkv.shape[:2], 3, attn.num_heads, attn.head_dim)
            q, k, _ = qkv.reshape(shape).permute(2, 0, 3, 1, 4)
            pairs.append((q, k))
            x = block(x)
    return pairs


def _top_tokens(queries, keys, keep, scale):
    """Per (image, head): the ``keep`` tokens receiving most attention, as sets."""
    attention = torch.softmax(queries @ keys.transpose(-2, -1) * scale, dim=-1)
    top = attention.mean(dim=-2).topk(keep, dim=-1).indices
    return [[set(head.tolist()) for head in image] for image in top]


def _token_indices(selected, keys):
    """Which of ``keys`` (B, H, N, D) each selected key (B, H, T, D) is, as sets."""
    distance = torch.cdist(selected, keys)  # (B, H, T, N)
    assert float(distance.min(dim=-1).values.max()) < 1e-5
    index = distance.argmin(dim=-1)
    return [[set(head.tolist()) for head in image] for image in index]


def test_frozen_kv_ranks_tokens_by_the_layers_queries_against_its_keys():
    # Prepare: a tiny ViT whose query projection is minus its key projection, so
    # ranking by Q.K (queries avoid keys like themselves) and by K.K (each key
    # attends to itself) pick different tokens
    cfg = FptConfig(
        frozen_depth=2, frozen_embed_dim=32, frozen_num_heads=4, high_res=64
    )
    vit = create_vit(cfg, seed=0)
    width = vit.embed_dim
    with torch.no_grad():
        for block in vit.blocks:
            block.attn.qkv.weight[:width] = -block.attn.qkv.weight[width : 2 * width]
            block.attn.qkv.bias[:width] = -block.attn.qkv.bias[width : 2 * width]
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    keep = num_selected_tokens(17, 0.2)  # 4 x 4 patches + CLS
    # Execute
    keys, _ = FrozenKV(vit, token_ratio=0.2)(images)
    # Assert
    differing = 0
    for layer, (q, k) in enumerate(_layer_queries_and_keys(vit, images)):
        scale = vit.blocks[layer].attn.scale
        by_query_key = _top_tokens(q, k, keep, scale)
        by_key_key = _top_tokens(k, k, keep, scale)
        assert _token_indices(keys[:, layer], k) == by_query_key
        differing += sum(
            a != b
            for image_qk, image_kk in zip(by_query_key, by_key_key, strict=True)
            for a, b in zip(image_qk, image_kk, strict=True)
        )
    assert differing >= 8  # of 2 layers x 2 images x 4 heads: the case discriminates
