"""Run-config of VFL-CLIP (prefix ``vfl-clip.``) with the paper's defaults.

Paper (Yang, Subbotin, Zhukova; Sec. III-B, IV-B): CLIP split vertically,
CoOp prompt "dermatology image [CTX] [CLASS]" with 16 randomly initialised
context vectors, Adam with lr 0.001, backbones RN50x4/x16/x64, ViT-B/16,
ViT-B/32, ViT-L/14, ViT-L/14@336, DermaMNIST (7 classes) at 224+ px. CoOp
(Zhou et al. 2022) fixes the rest: context std 0.02, class token at the end,
text feature at the end-of-text token, CLIP's logit scale frozen.

Choices the paper leaves open, made here:

* One round is one Adam step on the exact gradient of the mean loss over the
  samples the image providers draw that round (secure aggregation of
  per-provider gradient sums gives exactly that). ``batch-size`` is each
  provider's mini-batch: rounds walk through its data in epochs of
  ``ceil(N_i / batch-size)`` rounds, as CoOp's data loader does (the paper
  trains in epochs, Figs. 2-3, and names no batch size: CoOp's reference
  batch is 32, the paper config's). ``0`` is full batch (the tiny config).
  The platform counts rounds, not epochs: ``num-server-rounds`` = epochs x
  rounds per epoch (``configs/vfl_clip_dermamnist.toml`` works it out).
* ``secagg-bits = 32`` with ``secagg-range = 1e6``: masked values cost what
  fp32 costs on the wire (a secure round moves ~1.1x the bytes of a plain one;
  64 bits would make it ~1.5x). Each provider's gradient sum, loss sum and
  count must stay within 1e6 (checked before masking, never clipped): enough
  for ~1e5 samples per provider. The sum of ``n`` providers is exact to
  ``n**2 * 1e6 / 2**32`` (2.3e-2 for 10), i.e. the pooled mean gradient to
  3.3e-6 on DermaMNIST's 7,007 training images. ``secagg-bits = 64`` makes it
  exact to ~1e-11 at twice the upload.
* ``secagg-threshold = 0``: the secure-aggregation default, ``ceil(2k/3)`` of
  each provider's ``k`` neighbours (:mod:`fedmed.privacy.directory`); the
  providers refuse anything lower, so a value only ever raises it. With 3
  providers (``k = 2``, ``t = 2``) no provider may drop out of a round; from
  4 on one may.
* ``quick-gelu = true``: OpenAI CLIP checkpoints use QuickGELU.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedmed.config import ConfigError, csv_list

PAPER_MODELS = (
    "RN50x4",
    "RN50x16",
    "RN50x64",
    "ViT-B-16",
    "ViT-B-32",
    "ViT-L-14",
    "ViT-L-14-336",
)
TINY_MODEL = "fedmed-tiny-clip"
DERMAMNIST_CLASSES = (
    "actinic keratoses and intraepithelial carcinoma",
    "basal cell carcinoma",
    "benign keratosis-like lesions",
    "dermatofibroma",
    "melanoma",
    "melanocytic nevi",
    "vascular lesions",
)


@dataclass(frozen=True)
class VflClipConfig:
    """VFL-CLIP: frozen CLIP towers, CoOp context, secure aggregation.

    ``knowledge-providers`` (default 1) knowledge providers each keep a text
    tower and a context; ``knowledge-templates`` (``|``-separated, one per
    provider; empty: all use ``template``) are their own class descriptions.
    ``class-names`` (comma list) overrides the DermaMNIST label names;
    ``zero-shot-templates`` (``|``-separated, ``{}`` = class name) are the
    hand-written prompts of the zero-shot baseline.
    """

    model: str = "ViT-B-16"
    checkpoint: str = ""
    quick_gelu: bool = True
    image_size: int = 0
    n_ctx: int = 16
    ctx_init_std: float = 0.02
    template: str = "dermatology image"
    class_names: str = ""
    zero_shot_templates: str = (
        "a dermatoscopic image of {}.|a photo of {}, a type of skin lesion."
    )
    lr: float = 1e-3
    dataset: str = "dermamnist"
    data_size: int = 28
    embed_batch_size: int = 64
    cache_dir: str = ""
    batch_size: int = 0
    knowledge_provider_partition: int = -1
    knowledge_providers: int = 1
    knowledge_templates: str = ""
    secagg_bits: int = 32
    secagg_range: float = 1e6
    secagg_threshold: int = 0
    auc_bins: int = 2000

    def __post_init__(self) -> None:
        if self.model not in (*PAPER_MODELS, TINY_MODEL):
            raise ConfigError(
                f"vfl-clip.model must be one of {', '.join(PAPER_MODELS)} or "
                f"{TINY_MODEL} (tests), found {self.model!r}"
            )
        if self.n_ctx < 1 or self.ctx_init_std <= 0 or self.lr <= 0:
            raise ConfigError(
                "vfl-clip.n-ctx must be >= 1 and vfl-clip.ctx-init-std, vfl-clip.lr > 0"
            )
        if self.secagg_bits not in (32, 64):
            raise ConfigError(
                f"vfl-clip.secagg-bits must be 32 or 64, found {self.secagg_bits}"
            )
        if self.batch_size < 0 or self.embed_batch_size < 1:
            raise ConfigError(
                "vfl-clip.batch-size must be >= 0 (0 = full batch) and "
                "vfl-clip.embed-batch-size >= 1"
            )
        if self.knowledge_providers < 1:
            raise ConfigError(
                "vfl-clip.knowledge-providers must be >= 1, found "
                f"{self.knowledge_providers}"
            )
        if self.knowledge_templates and (
            len(self.knowledge_prompts) != self.knowledge_providers
        ):
            raise ConfigError(
                "vfl-clip.knowledge-templates needs one template per knowledge "
                f"provider ({self.knowledge_providers}, '|'-separated), found "
                f"{len(self.knowledge_prompts)}: {self.knowledge_templates!r}"
            )
        if self.auc_bins < 2 or self.secagg_range <= 0:
            raise ConfigError(
                "vfl-clip.auc-bins must be >= 2 and vfl-clip.secagg-range > 0"
            )

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in label order."""
        return csv_list(self.class_names) if self.class_names else DERMAMNIST_CLASSES

    @property
    def knowledge_prompts(self) -> tuple[str, ...]:
        """Each knowledge provider's prompt template (its class descriptions)."""
        if not self.knowledge_templates:
            return (self.template,) * self.knowledge_providers
        return tuple(t.strip() for t in self.knowledge_templates.split("|"))

    @property
    def zero_shot_prompts(self) -> tuple[str, ...]:
        """The zero-shot baseline's templates."""
        return tuple(
            t.strip() for t in self.zero_shot_templates.split("|") if t.strip()
        )
