"""Several knowledge providers: secure mean of their text features, exact training.

Each knowledge provider keeps its own class descriptions, context and tower;
the image providers score against the mean of their text features, which the
server only learns as a secure sum; every provider backpropagates its share
of the aggregated gradient. The run equals centralised training of the
mean-of-towers model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmed.config import ConfigError
from fedmed.tasks.registry import get_task
from fedmed.tasks.vfl_clip import resolve_role, run_vfl_inprocess
from fedmed.tasks.vfl_clip.knowledge import (
    inprocess_knowledge,
    published_state,
    text_codec,
)
from fedmed.tasks.vfl_clip.messages import TextFeatures
from fedmed.tasks.vfl_clip.model import MeanTextModel
from fedmed.tasks.vfl_clip.roles import ImageProvider
from fedmed.tasks.vfl_clip.train import train_centralised

from .conftest import gaussian_split, tiny_run_config

TWO = {
    "lr": 0.01,
    "knowledge_providers": 2,
    "knowledge_templates": "dermatology image|skin lesion photo",
}


def image_providers(sizes=(40, 60, 50)) -> list[ImageProvider]:
    rng = np.random.default_rng(5)
    return [
        ImageProvider(k, gaussian_split(rng, n), gaussian_split(rng, 20))
        for k, n in enumerate(sizes)
    ]


def contexts(models) -> list[torch.Tensor]:
    return [m.prompt_learner.ctx.detach().clone() for m in models]


def test_two_knowledge_providers_equal_centralised_mean_of_towers():
    # Prepare
    task = get_task(tiny_run_config(**TWO))
    knowledge = task.knowledge_providers()
    reference = task.build_model()
    providers = image_providers()
    initial = contexts(reference.members)
    embeddings = torch.cat([p.train.tensors()[0] for p in providers])
    labels = torch.cat([p.train.tensors()[1] for p in providers])
    # Execute
    run_vfl_inprocess(task.cfg, knowledge, providers, rounds=5)
    train_centralised(reference, embeddings, labels, rounds=5, lr=task.cfg.lr)
    # Assert: every provider's context is the centralised model's member's
    assert isinstance(reference, MeanTextModel)
    vfl, central = contexts(k.model for k in knowledge), contexts(reference.members)
    for got, expected, start in zip(vfl, central, initial, strict=True):
        assert float((expected - start).abs().max()) > 0.02  # it trained
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(vfl[0], vfl[1])  # own descriptions, own contexts
    # Adam hides gradient scale errors (a share of 1 instead of 1/K): compare
    # the last gradients too
    for provider, member in zip(knowledge, reference.members, strict=True):
        torch.testing.assert_close(
            provider.model.prompt_learner.ctx.grad,
            member.prompt_learner.ctx.grad,
            rtol=1e-3,
            atol=2e-3,
        )


def test_the_server_learns_only_the_sum_of_the_text_features():
    # Prepare: capture what the server receives from each knowledge provider
    task = get_task(tiny_run_config(**TWO))
    knowledge = task.knowledge_providers()
    channel = inprocess_knowledge(task.cfg, knowledge)
    received = []
    mask = channel.channel.mask
    channel.channel.mask = lambda starts, job: (
        received.append(mask(starts, job)) or (received[-1])
    )
    own = [k.text_vector() for k in knowledge]
    # Execute
    text = channel.text_features(round_id=1)
    # Assert: the mean is exact, a single masked vector says nothing of T_k
    mean = (own[0] + own[1]) / 2
    np.testing.assert_allclose(text.features.reshape(-1), mean[:-1], atol=1e-6)
    assert text.logit_scale == pytest.approx(mean[-1])
    codec = text_codec(task.cfg, 2)
    for k, masked in received[0].items():
        alone = codec.decode(masked.masked)
        assert np.corrcoef(alone, own[k])[0, 1] < 0.5
        assert not np.allclose(alone, own[k], atol=1.0)


def test_knowledge_provider_roles_in_simulation_and_deployment():
    # Prepare
    cfg = get_task(tiny_run_config(**TWO)).cfg
    # Execute
    roles = [
        resolve_role({"partition-id": p, "num-partitions": 5}, cfg) for p in range(5)
    ]
    deployed = resolve_role({"role": "knowledge-provider", "knowledge-id": 1}, cfg)
    # Assert: the last two partitions hold knowledge, the first three images
    assert [(r.role, r.site, r.knowledge) for r in roles] == [
        ("image-provider", 0, None),
        ("image-provider", 1, None),
        ("image-provider", 2, None),
        ("knowledge-provider", None, 1),
        ("knowledge-provider", None, 0),
    ]
    assert deployed.knowledge == 1
    with pytest.raises(ConfigError, match="one template per knowledge provider"):
        get_task(tiny_run_config(knowledge_providers=3, knowledge_templates="a|b"))


def test_one_knowledge_provider_stays_the_default():
    # Prepare
    task = get_task(tiny_run_config())
    # Execute
    only = task.knowledge_providers()
    # Assert
    assert task.cfg.knowledge_providers == 1 and len(only) == 1
    assert only[0].share == 1.0
    assert type(task.build_model()).__name__ == "CoopTextModel"


def test_checkpointed_mean_text_features_score_like_the_mean_of_towers():
    # Prepare: a trained-looking mean model and a fresh one of the same config
    task = get_task(tiny_run_config(**TWO))
    trained, fresh = task.build_model(), task.build_model()
    with torch.no_grad():
        generator = torch.Generator().manual_seed(3)
        for member in trained.members:
            ctx = member.prompt_learner.ctx
            ctx.add_(torch.randn(ctx.shape, generator=generator))
        features = trained().numpy()
    scale = float(trained.logit_scale)
    published = published_state(TextFeatures(3, features, scale))
    split = gaussian_split(np.random.default_rng(2), 30, dim=features.shape[1])
    # Execute
    with torch.no_grad():
        before = fresh().clone()
        task.load_exchanged(fresh, published)
        pinned = fresh().clone()
        scored = task.evaluate_heldout(fresh, split)
        task.load_exchanged(fresh, task.exchanged(trained))  # members again
        again = fresh().clone()
    # Assert: the published mean scores exactly as the model it came from
    assert set(published) == {"text_features", "logit_scale"}
    assert scored == task.evaluate_heldout(trained, split)
    assert float(fresh.logit_scale) == pytest.approx(scale)
    assert not torch.allclose(before, pinned, atol=1e-3)
    torch.testing.assert_close(pinned, torch.from_numpy(features), rtol=0, atol=0)
    torch.testing.assert_close(again, pinned)
    assert fresh.published is None
    with pytest.raises(ValueError, match="checkpoint text features have shape"):
        task.load_exchanged(fresh, {**published, "text_features": torch.zeros(2, 3)})
