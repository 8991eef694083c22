"""Only what trains leaves a site: every exchanged tensor gets a gradient in a
training step, and the decoder parts SAMBA's loss never reaches stay home."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmed.data.brats import find_cases
from fedmed.tasks.registry import get_task
from fedmed.tasks.samba.config import SambaConfig
from fedmed.tasks.samba.data import training_samples
from fedmed.tasks.samba.embedding_cache import EmbeddingCache
from fedmed.tasks.samba.model import (
    build_sam,
    freeze_encoders,
    freeze_untrained_decoder_parameters,
)
from fedmed.tasks.samba.train import train_decoder
from fedmed.tasks.samba.voting import train_voting

# A gradient below this fraction of the step's largest one is rounding noise:
# inert tensors (attention key biases, conv biases before an instance norm)
# measure about 1e-10 of it, trained tensors 2e-4 and more.
NOISE_FRACTION = 1e-6
UNUSED_MLPS = {"binary": (1, 2, 3), "mc": (0,)}


def _gradient_sizes(model, names) -> dict[str, float]:
    params = dict(model.named_parameters())
    return {
        n: 0.0 if params[n].grad is None else float(params[n].grad.abs().max())
        for n in names
    }


@pytest.mark.parametrize("variant", ["binary", "mc"])
def test_every_exchanged_decoder_tensor_gets_a_gradient_in_a_training_step(
    phantoms, variant
):
    # Prepare: the task's own model, samples and training step
    task = get_task(
        {
            "task.name": "samba",
            "samba.sam-model": "tiny",
            "samba.views": "z",
            "samba.modalities": "flair",
            "samba.variant": variant,
            "samba.voting": False,
            "samba.batch-size": 8,
            "data-dir": str(phantoms),
        }
    )
    model = task.build_model()
    cache = EmbeddingCache(model.sam, model.description, 32)
    samples = training_samples(find_cases(phantoms / "site_0"), task.cfg, cache)
    sent = task.exchanged(model)
    # Execute: one optimiser step on one batch; its gradients stay on the tensors
    train_decoder(model.sam, samples[:8], task.cfg, 1e-3, 1, np.random.default_rng(0))
    # Assert
    sizes = _gradient_sizes(model, sent)
    largest = max(sizes.values())
    assert largest > 0
    assert {n for n, g in sizes.items() if g <= NOISE_FRACTION * largest} == set()
    absent = {
        n
        for n, _ in model.named_parameters()
        if n.startswith("sam.mask_decoder.") and n not in sent
    }
    assert absent and all(model.get_parameter(n).grad is None for n in absent)
    assert any(".iou_prediction_head." in n for n in absent)
    for index in UNUSED_MLPS[variant]:
        assert any(f"output_hypernetworks_mlps.{index}." in n for n in absent)
    tokens = {
        "sam.mask_decoder.iou_token.weight",
        "sam.mask_decoder.mask_tokens.weight",
    }
    assert tokens <= set(sent)


def test_every_exchanged_voting_tensor_gets_a_gradient_in_a_training_step():
    # Prepare: one random case for the authors' 7-channel voting net
    task = get_task({"task.name": "samba", "samba.sam-model": "tiny", "seed": 1})
    model = task.build_model()
    sent = {k for k in task.exchanged(model) if k.startswith("voting.")}
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(7, 24, 24, 16)).astype(np.float16)
    target = (rng.random((3, 24, 24, 16)) > 0.7).astype(np.uint8)
    cfg = SambaConfig(voting_epochs=1, voting_batch_size=1)
    # Execute
    train_voting(model.voting, [(inputs, target)], [], cfg, rng, torch.device("cpu"))
    # Assert: conv biases in front of an instance norm never train, never travel
    sizes = _gradient_sizes(model, sent)
    largest = max(sizes.values())
    assert {n for n, g in sizes.items() if g <= NOISE_FRACTION * largest} == set()
    all_voting = {n for n, _ in model.named_parameters() if n.startswith("voting.")}
    assert len(all_voting - sent) == 4
    assert all(n.endswith(".conv.bias") for n in all_voting - sent)


@pytest.mark.parametrize(
    ("variant", "untrained", "exchanged"),
    [("binary", 552_036 + 1_152, 3_505_152), ("mc", 272_420 + 1_152, 3_784_768)],
)
def test_vit_b_decoder_sends_only_its_trained_parameters(variant, untrained, exchanged):
    # Prepare: SAM vit_b on the meta device (shapes only)
    cfg = SambaConfig(sam_model="vit_b", variant=variant)
    with torch.device("meta"):
        sam, _ = build_sam(cfg)
    freeze_encoders(sam)
    # Execute
    freeze_untrained_decoder_parameters(sam, variant)
    # Assert: IoU head (132,612) + unused output MLPs (139,808 each) + the 1,152
    # key-projection biases of the decoder's seven attentions
    params = list(sam.mask_decoder.parameters())
    assert sum(p.numel() for p in params) == 4_058_340
    assert sum(p.numel() for p in params if not p.requires_grad) == untrained
    assert sum(p.numel() for p in params if p.requires_grad) == exchanged
