"""CLIP split vertically: a frozen image tower for image providers, the text tower
plus the CoOp prompt learner for the knowledge provider.

CoOp (Zhou et al. 2022) as used by VFL-CLIP (Sec. III-B): the prompt of class
``k`` is ``[SOS] <template tokens> [V]_1 ... [V]_M <class tokens> . [EOS]``;
the ``M = n_ctx`` context vectors ``[V]`` are shared by all classes, drawn from
N(0, 0.02^2) and are the only trained tensors. The text feature of a prompt is
the transformer output at the end-of-text token (the largest token id),
projected into the joint space. CLIP's ``logit_scale`` stays frozen.

Models come from ``open_clip.create_model`` with a user checkpoint (a state
dict file) or, for tests, with seeded random weights. The tiny test
architecture ``fedmed-tiny-clip`` (``model_configs/``, registered with
``open_clip.add_model_config``) is the real CLIP class at toy size: a 2-layer
width-64 ViT on 32 px with 8 px patches and no pre-LayerNorm (with it, random
towers map all images to nearly one direction), a 2-layer width-64 text
transformer with context length 40 (the longest DermaMNIST prompt has 33
tokens) and the logit scale initialised to 100, the value trained CLIPs reach.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedmed.tasks.vfl_clip.config import PAPER_MODELS, TINY_MODEL, VflClipConfig

logger = logging.getLogger(__name__)

MODEL_CONFIGS = Path(__file__).resolve().parent / "model_configs"
CTX_PLACEHOLDER = "X"


def register_tiny_model() -> None:
    """Make the tiny test architecture known to open_clip (idempotent)."""
    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIGS / f"{TINY_MODEL}.json")


def create_clip(cfg: VflClipConfig, seed: int) -> nn.Module:
    """The frozen open_clip CLIP of ``cfg.model`` (checkpoint or seeded random init)."""
    register_tiny_model()
    pretrained = None
    if cfg.checkpoint:
        path = Path(cfg.checkpoint)
        if not path.is_file():
            raise FileNotFoundError(
                f"vfl-clip.checkpoint {path} does not exist: put the {cfg.model} CLIP "
                "weights (an open_clip / OpenAI state-dict file) there"
            )
        pretrained = str(path)
    elif cfg.model in PAPER_MODELS:
        logger.warning(
            "vfl-clip.checkpoint is empty: %s runs with random weights; set it to "
            "the CLIP weights file for meaningful results",
            cfg.model,
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip = open_clip.create_model(
            cfg.model,
            pretrained=pretrained,
            force_quick_gelu=cfg.quick_gelu and cfg.model != TINY_MODEL,
            force_image_size=cfg.image_size or None,
        )
    clip.eval()
    clip.requires_grad_(False)
    return clip


class PromptLearner(nn.Module):
    """CoOp's shared context vectors between the template and the class tokens."""

    def __init__(
        self,
        token_embedding: nn.Embedding,
        tokenized: Tensor,
        prefix_length: int,
        n_ctx: int,
        init_std: float,
        seed: int,
    ) -> None:
        super().__init__()
        width = token_embedding.weight.shape[1]
        generator = torch.Generator().manual_seed(seed)
        ctx = torch.randn(n_ctx, width, generator=generator) * init_std
        self.ctx = nn.Parameter(ctx.to(token_embedding.weight.dtype))
        with torch.no_grad():
            embedded = token_embedding(tokenized)
        self.register_buffer("tokenized", tokenized, persistent=False)
        self.register_buffer(
            "token_prefix", embedded[:, :prefix_length], persistent=False
        )
        self.register_buffer(
            "token_suffix", embedded[:, prefix_length + n_ctx :], persistent=False
        )

    def forward(self) -> Tensor:
        """Prompt token embeddings ``(C, L, width)`` with the context inserted."""
        ctx = self.ctx.unsqueeze(0).expand(self.token_prefix.shape[0], -1, -1)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)


def tokenize_prompts(
    tokenizer, template: str, class_names: tuple[str, ...], n_ctx: int
) -> tuple[Tensor, int]:
    """Token ids of "<template> X..X <class>." and the index where ``ctx`` starts."""
    placeholder = " ".join([CTX_PLACEHOLDER] * n_ctx)
    texts = [f"{template} {placeholder} {name}.".strip() for name in class_names]
    tokenized = tokenizer(texts)
    template_ids = tokenizer([template])[0] if template.strip() else None
    template_length = 0 if template_ids is None else int((template_ids > 0).sum()) - 2
    start = 1 + template_length
    x_id = tokenizer([CTX_PLACEHOLDER])[0][1]
    if not bool((tokenized[:, start : start + n_ctx] == x_id).all()):
        raise ValueError(
            f"the prompt template {template!r} does not tokenise into separate words "
            "before the context; use plain words (e.g. 'dermatology image')"
        )
    if bool((tokenized[:, -1] > 0).any()):
        raise ValueError(
            "a prompt is longer than the text encoder's context length; use a shorter "
            "template, fewer context vectors or shorter class names"
        )
    return tokenized, start


class CoopTextModel(nn.Module):
    """The knowledge provider's model: frozen text tower + trainable CoOp context."""

    def __init__(self, clip: nn.Module, tokenizer, cfg: VflClipConfig, seed: int):
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
        self.register_buffer(
            "logit_scale", clip.logit_scale.detach().exp().clone(), persistent=False
        )
        self.tokenizer = tokenizer
        tokenized, start = tokenize_prompts(
            tokenizer, cfg.template, cfg.classes, cfg.n_ctx
        )
        self.prompt_learner = PromptLearner(
            clip.token_embedding, tokenized, start, cfg.n_ctx, cfg.ctx_init_std, seed
        )

    @property
    def num_classes(self) -> int:
        return int(self.prompt_learner.tokenized.shape[0])

    @property
    def embed_dim(self) -> int:
        """Width of the joint image-text space (columns of ``T``)."""
        projection = self.text_projection
        if isinstance(projection, nn.Linear):
            return int(projection.out_features)
        return int(projection.shape[1])

    def encode(self, embeddings: Tensor, tokenized: Tensor) -> Tensor:
        """CLIP text features from token embeddings, pooled at end-of-text."""
        x = embeddings + self.positional_embedding.to(embeddings.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0]), tokenized.argmax(dim=-1)]
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection

    def forward(self) -> Tensor:
        """Class text features ``T`` (C x d), unnormalised."""
        return self.encode(self.prompt_learner(), self.prompt_learner.tokenized)

    def encode_texts(self, texts: list[str]) -> Tensor:
        """Text features of hand-written prompts (zero-shot baseline)."""
        tokens = self.tokenizer(texts)
        return self.encode(self.token_embedding(tokens), tokens)


def build_text_model(
    cfg: VflClipConfig, seed: int, ctx_seed: int | None = None
) -> CoopTextModel:
    """Knowledge-provider side: text tower and prompt learner (image tower dropped).

    ``seed`` initialises a random tower (tests), ``ctx_seed`` (default:
    ``seed``) the context vectors.
    """
    clip = create_clip(cfg, seed)
    tokenizer = open_clip.get_tokenizer(cfg.model)
    model = CoopTextModel(clip, tokenizer, cfg, seed if ctx_seed is None else ctx_seed)
    model.prompt_learner.ctx.requires_grad_(True)
    return model


#: Checkpoint keys of the mean text features a ``K >= 2`` VFL server keeps
#: (it never holds the contexts, which stay at their knowledge providers).
PUBLISHED_TEXT = ("text_features", "logit_scale")


class MeanTextModel(nn.Module):
    """Several knowledge providers' models seen as one: the mean of their ``T_k``.

    The centralised reference of VFL with ``K`` knowledge providers: the
    image providers score against ``(1/K) sum_k T_k`` with the mean logit
    scale, and every context trains through it. A federated ``K >= 2`` run's
    checkpoints hold that mean only (:data:`PUBLISHED_TEXT`);
    :meth:`load_published` makes the model score with it.
    """

    def __init__(self, models: list[CoopTextModel]) -> None:
        super().__init__()
        if not models:
            raise ValueError("MeanTextModel needs at least one text model")
        self.members = nn.ModuleList(models)
        self.register_buffer("logit_scale", self._mean_scale(), persistent=False)
        self.published: Tensor | None = None

    def _mean_scale(self) -> Tensor:
        return torch.stack([m.logit_scale for m in self.members]).mean()

    def forward(self) -> Tensor:
        """Mean class text features ``(1/K) sum_k T_k`` (C x d)."""
        if self.published is not None:
            return self.published
        return torch.stack([m() for m in self.members]).mean(dim=0)

    def load_published(self, state: dict[str, Tensor] | None) -> None:
        """Score with a checkpoint's mean text features (None: the members again)."""
        if state is None:
            self.published = None
            self.logit_scale = self._mean_scale()
            return
        features, scale = (state[k] for k in PUBLISHED_TEXT)
        expected = self.forward().shape
        if tuple(features.shape) != tuple(expected):
            raise ValueError(
                f"checkpoint text features have shape {tuple(features.shape)}, "
                f"this configuration's classes and tower give {tuple(expected)}"
            )
        self.published = features.detach().float().clone()
        self.logit_scale = scale.detach().float().reshape(())


class ImageEncoder(nn.Module):
    """Image-provider side: CLIP's frozen image tower with its preprocessing."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.visual = clip.visual
        preprocess = getattr(clip.visual, "preprocess_cfg", {}) or {}
        mean = preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = preprocess.get("std", open_clip.OPENAI_DATASET_STD)
        self.image_size = int(np.atleast_1d(clip.visual.image_size)[0])
        self.register_buffer(
            "mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std).view(1, 3, 1, 1), persistent=False
        )

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """uint8 ``(B, S, S, 3)`` images -> L2-normalised embeddings ``(B, d)``."""
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            size = (self.image_size, self.image_size)
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True)
            x = x.clamp_(0.0, 1.0)
        x = (x - self.mean) / self.std
        return F.normalize(self.visual(x), dim=-1)


def build_image_encoder(cfg: VflClipConfig, seed: int) -> ImageEncoder:
    """Image-provider side: frozen image tower (text tower dropped)."""
    return ImageEncoder(create_clip(cfg, seed)).eval()
