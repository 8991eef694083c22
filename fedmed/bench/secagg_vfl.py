"""The full VFL-CLIP round, secure vs plain, at 10 image providers (bench secagg).

``round_secure_wall_s`` is one training round of
:func:`fedmed.tasks.vfl_clip.protocol.train_round` (the knowledge provider's
text forward pass for ``T`` and backward pass for the Adam step, each
provider's CoOp gradient on 700 embeddings, secure aggregation v2 with the
shipped 32-bit fixed point, every message through its byte form; a 64-bit
ring's bytes beside it); ``round_plain_wall_s`` the same round with plain
fp32 summation. All parties run one after another in one process, so the
masking of every provider is on the clock (an upper bound on the overhead).
Secure bytes include the run's key setup (one-round run, the worst case).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import numpy as np

from fedmed.privacy.protocol import Traffic
from fedmed.tasks.vfl_clip.config import VflClipConfig
from fedmed.tasks.vfl_clip.data import EmbeddedSplit
from fedmed.tasks.vfl_clip.messages import AggregatedGradient
from fedmed.tasks.vfl_clip.model import build_text_model
from fedmed.tasks.vfl_clip.protocol import (
    InProcessKnowledge,
    inprocess_providers,
    train_round,
)
from fedmed.tasks.vfl_clip.roles import ImageProvider, KnowledgeProvider

ROUND_PROVIDERS = 10
ROUND_TEXT_TOWERS = {7 * 512: "ViT-B-16", 7 * 768: "ViT-L-14"}
ROUND_EXAMPLES = 700  # DermaMNIST's 7,007 training images over 10 providers


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def synthetic_providers(n: int, dim: int, seed: int) -> list[ImageProvider]:
    """Image providers holding normalised random embeddings and labels."""
    rng = np.random.default_rng(seed)
    providers = []
    for site in range(n):
        points = rng.normal(size=(ROUND_EXAMPLES, dim)).astype(np.float32)
        points /= np.linalg.norm(points, axis=1, keepdims=True)
        labels = rng.integers(0, 7, ROUND_EXAMPLES)
        split = EmbeddedSplit(points, labels)
        providers.append(ImageProvider(site, split, split))
    return providers


def plain_vfl_round(
    providers: list[ImageProvider], knowledge: InProcessKnowledge, round_id: int
) -> int:
    """The same VFL round with plain fp32 summation; returns its payload bytes."""
    text = knowledge.text_features(round_id)
    total, sent = None, 0
    for provider in providers:
        vector = provider.gradient_vector(text).astype(np.float32)
        received = np.frombuffer(vector.tobytes(), dtype=np.float32)
        total = received.astype(np.float64) + (0.0 if total is None else total)
        sent += vector.nbytes
    num_classes, dim = text.features.shape
    knowledge.apply(AggregatedGradient.from_sum(round_id, total, num_classes, dim))
    return sent


def vfl_parties(cfg: VflClipConfig, providers, traffic: Traffic):
    """Knowledge provider (seed 0) and in-process providers after key setup."""
    model = build_text_model(cfg, 0)
    knowledge = InProcessKnowledge(KnowledgeProvider(model, cfg.lr), True, traffic)
    (server, channel), setup_s = _timed(inprocess_providers, cfg, providers, True)
    channel.traffic = traffic
    return knowledge, server, channel, setup_s


def secure_round_bytes(cfg: VflClipConfig, providers, rounds: int = 1) -> float:
    """Payload bytes of one secure VFL round (T to every provider included)."""
    traffic = Traffic()
    knowledge, server, channel, _ = vfl_parties(cfg, providers, traffic)
    for round_id in range(1, rounds + 1):
        train_round(server, channel, knowledge, round_id)
    down = len(providers) * knowledge.text_features(0).payload_bytes()
    return traffic.total / rounds + down


def measure_vfl_round(dim: int, repeats: int) -> dict:
    """Median wall time and bytes of a full VFL round, secure vs plain."""
    cfg = VflClipConfig(model=ROUND_TEXT_TOWERS[dim])  # shipped: 32-bit ring
    providers = synthetic_providers(ROUND_PROVIDERS, dim // 7, seed=dim)
    plain_traffic = Traffic()
    secure_kp, server, channel, setup_s = vfl_parties(cfg, providers, Traffic())
    plain_kp = InProcessKnowledge(
        KnowledgeProvider(build_text_model(cfg, 0), cfg.lr), True, plain_traffic
    )
    secure_s, plain_s, plain_sent = [], [], 0
    for round_id in range(1, repeats + 2):  # round 1 warms up both paths
        _, t = _timed(train_round, server, channel, secure_kp, round_id)
        sent, t_plain = _timed(plain_vfl_round, providers, plain_kp, round_id)
        if round_id > 1:
            secure_s.append(t)
            plain_s.append(t_plain)
            plain_sent += sent
    text_down = ROUND_PROVIDERS * secure_kp.text_features(0).payload_bytes()
    plain_bytes = plain_traffic.total / (repeats + 1) + text_down
    plain_bytes += plain_sent / repeats
    ring64 = replace(cfg, secagg_bits=64)
    secure_bytes = secure_round_bytes(cfg, providers)
    secure_bytes_64 = secure_round_bytes(ring64, providers)
    secure_wall, plain_wall = statistics.median(secure_s), statistics.median(plain_s)
    return {
        "round_secure_wall_s": secure_wall,
        "round_plain_wall_s": plain_wall,
        "round_time_ratio": secure_wall / plain_wall,
        "round_secure_bytes": secure_bytes,
        "round_plain_bytes": plain_bytes,
        "round_bytes_ratio": secure_bytes / plain_bytes,
        "round_bytes_ratio_64bit_ring": secure_bytes_64 / plain_bytes,
        "round_key_setup_s": setup_s,
        "round_text_tower": cfg.model,
    }
