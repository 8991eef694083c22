"""CoOp prompt learner on open_clip: layout, what trains, EOT pooling."""

from __future__ import annotations

import open_clip
import torch

from fedmed.tasks.vfl_clip.model import build_text_model, create_clip

from .conftest import tiny_config


def test_prompt_layout_puts_context_after_template_and_class_last():
    # Prepare
    cfg = tiny_config()
    model = build_text_model(cfg, seed=0)
    tokenizer = open_clip.get_tokenizer(cfg.model)
    x_id = int(tokenizer(["X"])[0][1])
    # Execute
    tokens = model.prompt_learner.tokenized
    # Assert: [SOS] dermatology image X*16 <class> . [EOT]
    prefix = model.prompt_learner.token_prefix.shape[1]
    assert prefix == 1 + 2
    assert (tokens[:, prefix : prefix + cfg.n_ctx] == x_id).all()
    assert model.prompt_learner.ctx.shape == (cfg.n_ctx, 64)
    assert model.num_classes == 7 and model.embed_dim == 32


def test_only_the_context_trains_and_is_exchanged():
    # Prepare
    model = build_text_model(tiny_config(), seed=0)
    # Execute
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    # Assert
    assert trainable == ["prompt_learner.ctx"]
    assert float(model.prompt_learner.ctx.detach().std()) < 0.05  # N(0, 0.02^2)


def test_text_features_equal_clip_encode_text_when_context_is_the_placeholder():
    # Prepare: with ctx = embedding of "X", the prompts are ordinary CLIP prompts
    cfg = tiny_config()
    model = build_text_model(cfg, seed=0)
    clip = create_clip(cfg, seed=0)
    x_embedding = clip.token_embedding(model.prompt_learner.tokenized[0, 3].clone())
    with torch.no_grad():
        model.prompt_learner.ctx.copy_(x_embedding.expand(cfg.n_ctx, -1))
        # Execute
        ours = model()
        reference = clip.encode_text(model.prompt_learner.tokenized)
    # Assert
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    assert float(model.logit_scale) == float(clip.logit_scale.exp())


def test_build_is_deterministic_for_a_seed():
    # Execute
    first = build_text_model(tiny_config(), seed=3)
    second = build_text_model(tiny_config(), seed=3)
    # Assert
    torch.testing.assert_close(first(), second())
