"""FPT network: what trains, what travels, and that the frozen model stays frozen."""

from __future__ import annotations

import pytest
import torch

from fedmed.comm.selection import UpdateRejected
from fedmed.tasks.fpt.baselines import build_baseline
from fedmed.tasks.fpt.config import FptConfig
from fedmed.tasks.fpt.frozen import create_vit
from fedmed.tasks.fpt.model import EXCHANGED_PREFIXES, build_fpt_model
from fedmed.tasks.registry import get_task

TINY = FptConfig(
    frozen_depth=2,
    frozen_embed_dim=64,
    frozen_num_heads=4,
    high_res=64,
    low_res=32,
    side_reduction=4,
    side_patch_size=8,
)


def _replace(cfg: FptConfig, **changes) -> FptConfig:
    return FptConfig(**{**cfg.__dict__, **changes})


def test_no_gradient_reaches_frozen_weights():
    # Prepare: no preloading, so the frozen model runs inside the forward pass
    model = build_fpt_model(_replace(TINY, preload=False), seed=0)
    side, high = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 64, 64)
    # Execute
    loss = model(side, high_image=high).logsumexp(dim=1).sum()
    loss.backward()
    # Assert
    frozen = dict(model.frozen.named_parameters())
    assert frozen and all(
        p.grad is None and not p.requires_grad for p in frozen.values()
    )
    trainable = [p for n, p in model.named_parameters() if not n.startswith("frozen.")]
    assert all(p.grad is not None for p in trainable)
    assert model.fusion.prompt_out.weight.grad.abs().sum() > 0


def test_exchanged_holds_only_side_prompt_fusion_and_head_tensors(tmp_path):
    # Prepare
    task = get_task({"task.name": "fpt", "data-dir": str(tmp_path), "seed": 0})
    model = task.build_model()
    # Execute
    sent = task.exchanged(model)
    # Assert: paper's ViT-B/16 at 512 px with a 96-wide side network on 224 px
    assert sent and all(name.startswith(EXCHANGED_PREFIXES) for name in sent)
    assert {"fusion.prompts", "side.head.weight"} <= sent.keys()
    assert sent["fusion.prompts"].shape == (12, 16, 96)
    vit_b = create_vit(task.cfg, seed=0, device="meta")
    ratio = sum(t.numel() for t in sent.values()) / sum(
        p.numel() for p in vit_b.parameters()
    )
    assert 0.015 <= ratio <= 0.03  # paper: 1.81%


def test_load_exchanged_round_trips_and_rejects_a_bad_aggregate(tmp_path):
    # Prepare
    task = get_task(
        {"task.name": "fpt", "data-dir": str(tmp_path), "fpt.method": "fpt"}
    )
    source, target = task.build_model(), task.build_model()
    with torch.no_grad():
        source.fusion.prompts.add_(1.0)
    state = task.exchanged(source)
    bad = {**state, "fusion.prompts": torch.zeros(1, 2, 3)}
    # Execute
    task.load_exchanged(target, state)
    # Assert
    torch.testing.assert_close(target.fusion.prompts, source.fusion.prompts)
    with pytest.raises(UpdateRejected, match="fusion.prompts"):
        task.load_exchanged(target, bad)


def test_build_is_deterministic_in_the_seed():
    # Prepare / Execute
    first, second = build_fpt_model(TINY, seed=3), build_fpt_model(TINY, seed=3)
    other = build_fpt_model(TINY, seed=4)
    # Assert
    twin = second.state_dict()
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, twin[name]), name
    assert not torch.equal(
        first.side.patch_embed.proj.weight, other.side.patch_embed.proj.weight
    )


def test_side_network_is_a_width_reduced_copy_and_can_be_sliced():
    # Prepare
    cfg = _replace(TINY, side_init="slice")
    # Execute
    model = build_fpt_model(cfg, seed=0)
    frozen = create_vit(cfg, seed=0)
    # Assert: width 64/4 = 16 with the frozen model's 4 heads and depth
    assert model.side.embed_dim == 16 and len(model.side.blocks) == 2
    assert model.side.blocks[0].attn.num_heads == 4
    qkv = frozen.blocks[1].attn.qkv.weight
    torch.testing.assert_close(model.side.blocks[1].attn.qkv.weight, qkv[::4, ::4])


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("full", lambda n: True),
        ("linear", lambda n: n.startswith("vit.head.")),
        ("bitfit", lambda n: n.startswith("vit.head.") or n.endswith(".bias")),
        ("lora", lambda n: n.startswith("vit.head.") or ".lora_" in n),
        ("prompt", lambda n: n.startswith("vit.head.") or n == "prompts"),
    ],
)
def test_baselines_train_only_their_own_tensors(method, expected):
    # Prepare / Execute
    model = build_baseline(_replace(TINY, method=method), seed=0)
    logits = model(torch.randn(2, 3, 64, 64))
    # Assert
    names = {n for n, _ in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in names if expected(n)}
    assert logits.shape == (2, 2)
    if method == "lora":
        assert any(".lora_A." in n for n in trainable)
