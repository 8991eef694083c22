"""The paper's comparison table in the same harness (VFL-CLIP Table I).

* zero-shot CLIP: hand-written prompts, no training (CLIP's usual protocol:
  per-class mean of the normalised features of several templates);
* centralised CoOp: the same prompt learner trained on the image providers'
  pooled embeddings with the federated run's budget (one Adam step per VFL
  round on the same samples): the reference VFL-CLIP must equal;
* ResNet-18 / ResNet-50 (timm) trained from scratch on the images, as in
  MedMNIST v2 (cross-entropy, Adam, lr 1e-3).

All return the same metrics as the VFL run: ``auc`` (mean one-vs-rest),
``acc``, ``acc_macro``.
"""

from __future__ import annotations

import numpy as np
import timm
import torch
import torch.nn.functional as F

from fedmed.tasks.classify.data import ImageArrayDataset
from fedmed.tasks.classify.train import predict, train_local
from fedmed.tasks.vfl_clip.config import VflClipConfig
from fedmed.tasks.vfl_clip.data import EmbeddedSplit
from fedmed.tasks.vfl_clip.metrics import exact_metrics
from fedmed.tasks.vfl_clip.model import CoopTextModel, build_text_model
from fedmed.tasks.vfl_clip.train import predict_logits, train_centralised

RESNETS = ("resnet18", "resnet50")


@torch.no_grad()
def zero_shot_text_features(model: CoopTextModel, cfg: VflClipConfig) -> torch.Tensor:
    """Class features from hand-written prompts, averaged over templates."""
    features = []
    for name in cfg.classes:
        texts = [template.format(name) for template in cfg.zero_shot_prompts]
        encoded = F.normalize(model.encode_texts(texts), dim=-1).mean(dim=0)
        features.append(F.normalize(encoded, dim=-1))
    return torch.stack(features)


def zero_shot(model: CoopTextModel, cfg: VflClipConfig, test: EmbeddedSplit) -> dict:
    """Zero-shot CLIP on test embeddings (no training)."""
    embeddings, labels = test.tensors()
    text = zero_shot_text_features(model, cfg)
    logits = predict_logits(embeddings, text, float(model.logit_scale))
    return exact_metrics(logits, labels.numpy())


def centralised_coop(
    cfg: VflClipConfig,
    train: EmbeddedSplit,
    test: EmbeddedSplit,
    rounds: int,
    seed: int = 0,
) -> tuple[dict, CoopTextModel]:
    """CoOp on the image providers' pooled embeddings with the budget of ``rounds``.

    ``train`` is the pooled training split of the image providers only (its
    ``parts`` say how many samples each had), trained with one Adam step per
    VFL round on the samples that round draws; the metrics on ``test`` carry
    the VFL run's held-out names (``auc``, ``acc``, ``acc_macro``).
    """
    model = build_text_model(cfg, seed)
    embeddings, labels = train.tensors()
    train_centralised(
        model,
        embeddings,
        labels,
        rounds,
        cfg.lr,
        cfg.batch_size,
        seed,
        part_sizes=train.part_sizes,
    )
    test_embeddings, test_labels = test.tensors()
    with torch.no_grad():
        logits = predict_logits(test_embeddings, model(), float(model.logit_scale))
    return exact_metrics(logits, test_labels.numpy()), model


def resnet_baseline(
    arch: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    num_classes: int,
    epochs: int,
    image_size: int = 0,
    lr: float = 1e-3,
    batch_size: int = 128,
    max_steps: int = 0,
    seed: int = 0,
) -> dict:
    """A timm ResNet trained from scratch on uint8 images (MedMNIST v2 baseline).

    ``image_size`` 0 keeps the images' own size (28 or 224 in the paper).
    """
    if arch not in RESNETS:
        raise ValueError(f"ResNet baseline must be one of {RESNETS}, found {arch!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    side = image_size or int(train[0].shape[1])
    train_local(
        model,
        ImageArrayDataset(*train),
        side=side,
        lr=lr,
        weight_decay=0.0,
        batch_size=batch_size,
        epochs=epochs,
        max_steps=max_steps,
        seed=seed,
    )
    labels, probs = predict(model, ImageArrayDataset(*test), side=side, batch_size=256)
    return exact_metrics(np.log(np.clip(probs, 1e-12, None)), labels)
