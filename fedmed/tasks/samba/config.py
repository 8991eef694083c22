"""Run-config of SAMBA (prefix ``samba.``): the paper's defaults, frozen.

Defaults follow the SAMBA paper (Barakat et al., BraTS 2023) and the authors'
released code where the paper is silent: decoder-only fine-tuning with Adam
lr 1e-5, Dice loss, 15 epochs (binary) or 50 (SAMBA-mc), box jitter 0..19 px,
ReduceLROnPlateau(0.25, 5); a 116k-parameter monai 3D U-Net voting network
(in 7, out 3, channels 16/32/64, strides 2/2) trained with Adam 1e-3 and early
stopping; a YOLOv8n localizer at 256 px for 150 epochs.

Epoch budgets (``epochs``, ``voting-epochs``, ``yolo-epochs``) are totals over
a federated run of ``num-server-rounds``, not per round; the per-round split
is :mod:`fedmed.tasks.samba.schedule`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedmed.config import ConfigError, csv_list
from fedmed.data.brats import MODALITIES

SamModel = Literal["vit_b", "vit_l", "vit_h", "tiny"]
Variant = Literal["binary", "mc"]
PromptMode = Literal["tumour", "brain"]
LocalizerMode = Literal["off", "local", "federated"]
VIEWS: tuple[str, ...] = ("x", "y", "z")

PAPER_EPOCHS: dict[str, int] = {"binary": 15, "mc": 50}
"""Decoder epochs of the paper (Sec. 2.3), used when ``samba.epochs`` is 0."""


@dataclass(frozen=True)
class SambaConfig:
    """Everything SAMBA reads from the run config.

    ``variant``: ``binary`` (SAMBA: one whole-tumour mask per slice, the
    voting net turns masks into the three labels) or ``mc`` (SAMBA-mc: the
    decoder's three multimask outputs trained one-vs-rest on NETC, SNFH, ET).
    ``prompt``: ``tumour`` (box around the tumour, the paper's method) or
    ``brain`` (box around the brain, the paper's weaker baseline).
    ``localizer``: ``off``, ``local`` (YOLO trained per site, never sent) or
    ``federated`` (YOLO weights are exchanged as well). ``epochs``: decoder
    epochs over the whole run, 0 meaning the paper's 15 (binary) or 50 (mc);
    the voting net trains once, in the last round (see ``schedule``).
    """

    sam_model: SamModel = "vit_b"
    sam_checkpoint: str = ""
    tiny_image_size: int = 64
    tiny_dim: int = 32
    variant: Variant = "binary"
    prompt: PromptMode = "tumour"
    views: str = "x,y,z"
    modalities: str = ",".join(MODALITIES)
    epochs: int = 0
    batch_size: int = 16
    lr: float = 1e-5
    weight_decay: float = 0.0
    box_jitter: int = 20
    plateau_factor: float = 0.25
    plateau_patience: int = 5
    encoder_batch_size: int = 4
    cache_dir: str = ""
    test_fraction: float = 0.25
    val_fraction: float = 0.15
    eval_zero_shot: bool = True
    voting: bool = True
    voting_modalities: str = "t1,t2,flair"
    voting_views: str = "z"
    voting_channels: str = "16,32,64"
    voting_strides: str = "2,2"
    voting_epochs: int = 200
    voting_patience: int = 3
    voting_lr: float = 1e-3
    voting_batch_size: int = 8
    localizer: LocalizerMode = "off"
    yolo_model: str = "yolov8n.yaml"
    yolo_weights: str = ""
    yolo_epochs: int = 150
    yolo_imgsz: int = 256
    yolo_batch: int = 16
    yolo_modality: str = "flair"
    yolo_conf: float = 0.25
    yolo_empty_keep: float = 0.2

    def __post_init__(self) -> None:
        for key, values, allowed in (
            ("views", self.view_list, VIEWS),
            ("modalities", self.modality_list, MODALITIES),
            ("voting-views", self.voting_view_list, VIEWS),
            ("voting-modalities", self.voting_modality_list, MODALITIES),
        ):
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise ConfigError(
                    f"samba.{key}: expected a comma list from {', '.join(allowed)}, "
                    f"found {bad or 'nothing'}"
                )
        for key, subset, superset in (
            ("voting-modalities", self.voting_modality_list, self.modality_list),
            ("voting-views", self.voting_view_list, self.view_list),
        ):
            if self.voting and not set(subset) <= set(superset):
                raise ConfigError(
                    f"samba.{key}: {', '.join(subset)} must be among the SAM inputs "
                    f"({', '.join(superset)}); add them to samba.modalities/samba.views"
                )
        if self.yolo_modality not in MODALITIES:
            raise ConfigError(
                f"samba.yolo-modality: expected one of {', '.join(MODALITIES)}, "
                f"found {self.yolo_modality!r}"
            )
        self._check_positive()
        if not 0 < self.test_fraction < 1 or not 0 <= self.val_fraction < 1:
            raise ConfigError(
                "samba.test-fraction must be in (0, 1) and samba.val-fraction in "
                f"[0, 1), found {self.test_fraction} and {self.val_fraction}"
            )
        if len(self.voting_strides_tuple) != len(self.voting_channels_tuple) - 1:
            raise ConfigError(
                "samba.voting-strides needs one stride fewer than "
                "samba.voting-channels, "
                f"found {self.voting_strides!r} for {self.voting_channels!r}"
            )

    def _check_positive(self) -> None:
        for name in (
            "batch_size", "encoder_batch_size", "voting_epochs",
            "voting_batch_size", "yolo_epochs", "yolo_imgsz", "yolo_batch",
            "tiny_image_size", "tiny_dim",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"samba.{name.replace('_', '-')} must be >= 1, "
                    f"found {getattr(self, name)}"
                )
        if self.box_jitter < 0:
            raise ConfigError(f"samba.box-jitter must be >= 0, found {self.box_jitter}")
        if self.epochs < 0:
            raise ConfigError(f"samba.epochs must be >= 0, found {self.epochs}")
        if self.lr <= 0 or self.voting_lr <= 0:
            raise ConfigError("samba.lr and samba.voting-lr must be > 0")
        if self.tiny_image_size % 16 or self.tiny_dim % 16:
            raise ConfigError(
                "samba.tiny-image-size and samba.tiny-dim must be multiples of 16, "
                f"found {self.tiny_image_size} and {self.tiny_dim}"
            )

    @property
    def decoder_epochs(self) -> int:
        """Decoder epochs of the run: ``samba.epochs``, or if 0 the paper's 15 / 50."""
        return self.epochs or PAPER_EPOCHS[self.variant]

    @property
    def view_list(self) -> tuple[str, ...]:
        return csv_list(self.views)

    @property
    def modality_list(self) -> tuple[str, ...]:
        return csv_list(self.modalities)

    @property
    def voting_view_list(self) -> tuple[str, ...]:
        return csv_list(self.voting_views)

    @property
    def voting_modality_list(self) -> tuple[str, ...]:
        return csv_list(self.voting_modalities)

    @property
    def voting_channels_tuple(self) -> tuple[int, ...]:
        return tuple(int(c) for c in csv_list(self.voting_channels))

    @property
    def voting_strides_tuple(self) -> tuple[int, ...]:
        return tuple(int(s) for s in csv_list(self.voting_strides))

    @property
    def voting_in_channels(self) -> int:
        """4 volume-normalised MRIs + one SAM mask per voting modality and view."""
        return len(MODALITIES) + len(self.voting_modality_list) * len(
            self.voting_view_list
        )

    @property
    def num_mask_channels(self) -> int:
        """Decoder outputs trained: 1 (whole tumour) or 3 (NETC, SNFH, ET)."""
        return 1 if self.variant == "binary" else 3
