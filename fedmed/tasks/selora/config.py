"""SeLoRA run-config section: the paper's defaults, parsed once per run.

Keys live under the ``selora.`` prefix (``"selora.expand-threshold" = 1.1``).
Defaults follow the SeLoRA paper (Mao et al. 2024, Sec. 3.2): rank 1 at the
start, a check every t = 40 steps, lambda = 1.1, Adam 1e-4, batch 8, 224 px,
LoRA scaling fixed at alpha = 8 as in the authors' released code. Baselines
from the same paper: LoRA r = 4, DyLoRA r = 4, AdaLoRA 6 -> 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedmed.config import ConfigError, csv_list

METHODS = ("selora", "lora", "dylora", "adalora")
DEFAULT_UNET_TARGETS = "to_q,to_k,to_v,ff.net.0.proj,time_emb_proj"
DEFAULT_TEXT_TARGETS = "q_proj,k_proj,v_proj,out_proj,fc1,fc2"


@dataclass(frozen=True)
class SeLoRAConfig:
    """Everything the SeLoRA task reads from the run config (prefix ``selora.``).

    ``pretrained`` is a local Stable Diffusion v1.5 folder (``unet/``,
    ``text_encoder/``, ``tokenizer/``, ``vae/``, ``scheduler/``); empty selects
    the tiny random-initialised architecture used by tests and demos, which
    trains in latent space of a tiny VAE (``tiny-vae = true``) or directly in
    pixel space (``tiny-vae = false``).
    """

    method: Literal["selora", "lora", "dylora", "adalora"] = "selora"
    pretrained: str = ""
    tiny_width: int = 32
    tiny_vae: bool = True
    dataset: Literal["iu-xray", "montgomery"] = "iu-xray"
    projection: str = "Frontal"
    split: str = "0.8,0.16,0.04"
    resolution: int = 224
    max_tokens: int = 77
    unet_targets: str = DEFAULT_UNET_TARGETS
    text_targets: str = DEFAULT_TEXT_TARGETS
    init_rank: int = 1
    lora_alpha: float = 8.0
    max_rank: int = 0
    expand_every: int = 40
    expand_threshold: float = 1.1
    fisher: Literal["per-sample", "batch"] = "per-sample"
    baseline_rank: int = 4
    adalora_init_rank: int = 6
    adalora_target_rank: int = 4
    lr: float = 1e-4
    batch_size: int = 8
    local_epochs: int = 1
    max_steps: int = 0
    aggregation: Literal["svd", "zero-pad"] = "svd"
    aggregate_rank: Literal["max", "sum", "energy"] = "max"
    energy: float = 0.99
    eval_batch_size: int = 8
    generation_eval: bool = False
    eval_seeds: str = "0,1,2"
    eval_samples: int = 0
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    inception_weights: str = ""
    clip_model: str = "ViT-B-32"
    clip_weights: str = ""

    def __post_init__(self) -> None:
        self._check_counts()
        self._check_relations()
        self.split_fractions  # noqa: B018 - validates the split string
        self.seeds  # noqa: B018 - validates the seed list

    def _check_counts(self) -> None:
        """Sizes and counts: >= 1, or >= 0 where 0 means no limit."""
        positive = {
            "tiny-width": self.tiny_width,
            "resolution": self.resolution,
            "max-tokens": self.max_tokens,
            "init-rank": self.init_rank,
            "expand-every": self.expand_every,
            "baseline-rank": self.baseline_rank,
            "adalora-target-rank": self.adalora_target_rank,
            "batch-size": self.batch_size,
            "eval-batch-size": self.eval_batch_size,
            "local-epochs": self.local_epochs,
            "num-inference-steps": self.num_inference_steps,
        }
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(
                    f"selora.{key}: expected an integer >= 1, found {value}"
                )
        limits = {
            "max-rank": self.max_rank,
            "max-steps": self.max_steps,
            "eval-samples": self.eval_samples,
        }
        for key, value in limits.items():
            if value < 0:
                raise ConfigError(
                    f"selora.{key}: expected >= 0 (0 = no limit), found {value}"
                )

    def _check_relations(self) -> None:
        """Values that must agree with each other or lie in a range."""
        if self.adalora_init_rank < self.adalora_target_rank:
            raise ConfigError(
                f"selora.adalora-init-rank ({self.adalora_init_rank}) must be >= "
                f"selora.adalora-target-rank ({self.adalora_target_rank})"
            )
        if self.max_rank and self.max_rank < self.init_rank:
            raise ConfigError(
                f"selora.max-rank ({self.max_rank}) is below selora.init-rank "
                f"({self.init_rank}); raise it or set 0 for no cap"
            )
        if self.expand_threshold <= 0 or self.lora_alpha <= 0 or self.lr <= 0:
            raise ConfigError(
                "selora.expand-threshold, selora.lora-alpha and selora.lr must be "
                f"positive, found {self.expand_threshold}, {self.lora_alpha}, {self.lr}"
            )
        if not 0.0 < self.energy <= 1.0:
            raise ConfigError(
                f"selora.energy: expected a value in (0, 1], found {self.energy}"
            )
        if not self.unet_targets_list and not self.text_targets_list:
            raise ConfigError(
                "selora.unet-targets and selora.text-targets are both empty"
            )

    @property
    def unet_targets_list(self) -> tuple[str, ...]:
        """U-Net module-name suffixes that get an adapter."""
        return csv_list(self.unet_targets)

    @property
    def text_targets_list(self) -> tuple[str, ...]:
        """Text-encoder module-name suffixes that get an adapter."""
        return csv_list(self.text_targets)

    @property
    def split_fractions(self) -> tuple[float, float, float]:
        """(train, val, test) fractions; two values mean no validation split."""
        try:
            parts = [float(p) for p in csv_list(self.split)]
        except ValueError:
            raise ConfigError(
                "selora.split: expected comma-separated fractions, "
                f"found {self.split!r}"
            ) from None
        if len(parts) == 2:
            parts = [parts[0], 0.0, parts[1]]
        if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6:
            raise ConfigError(
                "selora.split: expected 'train,val,test' (or 'train,test') fractions "
                f"summing to 1, found {self.split!r}"
            )
        return parts[0], parts[1], parts[2]

    @property
    def seeds(self) -> tuple[int, ...]:
        """Seeds of the repeated generation evaluation (paper: 3 seeds)."""
        try:
            seeds = tuple(int(s) for s in csv_list(self.eval_seeds))
        except ValueError:
            raise ConfigError(
                f"selora.eval-seeds: expected comma-separated integers, "
                f"found {self.eval_seeds!r}"
            ) from None
        if not seeds:
            raise ConfigError("selora.eval-seeds: expected at least one seed")
        return seeds

    @property
    def selora_scaling(self) -> float:
        """Fixed LoRA scaling of SeLoRA layers (alpha / initial rank, never updated)."""
        return self.lora_alpha / self.init_rank
