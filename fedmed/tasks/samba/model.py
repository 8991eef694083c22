"""SAMBA's model: frozen SAM encoders, trainable mask decoder, voting net, localizer.

SAMBA Sec. 2.3: "SAM's image and prompt encoders remain frozen, while the
decoder is specifically fine-tuned". Only the trained part of the mask decoder
(plus the voting network, and the YOLO localizer when it is federated) ever
leaves a site; the image encoder (93% of vit_b's bytes) stays home, and so do
its cached embeddings. Decoder parameters the loss never moves (the IoU head,
the output MLPs of unused masks, attention key biases) are frozen and stay
home too.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from segment_anything.modeling.transformer import Attention
from torch import nn

from fedmed.tasks.samba.config import SambaConfig
from fedmed.tasks.samba.voting import build_voting_net

logger = logging.getLogger(__name__)

DECODER_PREFIX = "sam.mask_decoder."
VOTING_PREFIX = "voting."
LOCALIZER_PREFIX = "localizer."
OFFICIAL_CHECKPOINTS = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}


class SambaModel(nn.Module):
    """SAM plus SAMBA's optional voting network and YOLO localizer.

    ``description`` names the SAM architecture and weights; it enters the
    embedding-cache key so that embeddings of different encoders never mix.
    """

    def __init__(
        self,
        sam: Sam,
        voting: nn.Module | None,
        localizer: nn.Module | None,
        description: str,
    ) -> None:
        super().__init__()
        self.sam = sam
        self.voting = voting
        self.localizer = localizer
        self.description = description


def build_tiny_sam(image_size: int, dim: int) -> Sam:
    """A small SAM from segment_anything's own modelling classes (tests, demos).

    The embedding grid is always 16x16 (patch = image_size / 16), so the
    decoder's low-resolution logits are 64x64 like a 256-px slice at 1/4.
    """
    grid = 16
    encoder = ImageEncoderViT(
        img_size=image_size,
        patch_size=image_size // grid,
        in_chans=3,
        embed_dim=dim,
        depth=2,
        num_heads=2,
        mlp_ratio=2.0,
        out_chans=dim,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=4,
        global_attn_indexes=(1,),
    )
    prompt_encoder = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=(grid, grid),
        input_image_size=(image_size, image_size),
        mask_in_chans=8,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=2, embedding_dim=dim, mlp_dim=2 * dim, num_heads=2
        ),
        transformer_dim=dim,
        iou_head_depth=3,
        iou_head_hidden_dim=dim,
    )
    return Sam(
        image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=decoder
    )


def build_sam(cfg: SambaConfig) -> tuple[Sam, str]:
    """SAM of ``cfg.sam_model`` with the user's checkpoint, and its description."""
    if cfg.sam_model == "tiny":
        sam = build_tiny_sam(cfg.tiny_image_size, cfg.tiny_dim)
        description = f"tiny-{cfg.tiny_image_size}-{cfg.tiny_dim}"
    else:
        sam = sam_model_registry[cfg.sam_model](checkpoint=None)
        description = cfg.sam_model
    if cfg.sam_checkpoint:
        _load_sam_checkpoint(sam, Path(cfg.sam_checkpoint), cfg.sam_model)
        description += f"@{Path(cfg.sam_checkpoint).resolve()}"
    elif cfg.sam_model != "tiny":
        logger.warning(
            "samba.sam-checkpoint is empty: %s is randomly initialised, so zero-shot "
            "results are meaningless (set it to the official %s)",
            cfg.sam_model,
            OFFICIAL_CHECKPOINTS[cfg.sam_model],
        )
    return sam, description


def _load_sam_checkpoint(sam: Sam, path: Path, arch: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"SAM checkpoint {path} not found: put the official {arch} weights "
            f"({OFFICIAL_CHECKPOINTS.get(arch, 'a state dict of this architecture')}, "
            "segment-anything release) there or set samba.sam-checkpoint to their path"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = sam.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"SAM checkpoint {path} does not fit {arch}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}; check samba.sam-model"
        )


def freeze_encoders(sam: Sam) -> None:
    """Freeze image and prompt encoders (SAMBA Sec. 2.3); the decoder trains."""
    for module in (sam.image_encoder, sam.prompt_encoder):
        module.eval()
        for param in module.parameters():
            param.requires_grad_(False)
    for param in sam.mask_decoder.parameters():
        param.requires_grad_(True)


def untrained_decoder_parameters(
    decoder: MaskDecoder, variant: str
) -> list[nn.Parameter]:
    """Decoder parameters that SAMBA's loss never moves (gradient zero or absent).

    * The IoU prediction head: the Dice loss is on mask logits only.
    * Output MLPs of masks nobody reads: binary SAMBA reads the single-mask
      output (hypernetwork MLP 0), SAMBA-mc the three multimask outputs
      (MLPs 1-3).
    * The key-projection bias of every attention: it adds the same ``q . b``
      to all of a query's scores, which the softmax cancels, so its gradient
      is zero up to rounding.

    The IoU and mask tokens do train: every output token attends, and is
    attended to, in the two-way transformer.
    """
    used = {0} if variant == "binary" else {1, 2, 3}
    modules = [decoder.iou_prediction_head] + [
        mlp
        for index, mlp in enumerate(decoder.output_hypernetworks_mlps)
        if index not in used
    ]
    params = [p for module in modules for p in module.parameters()]
    params += [
        module.k_proj.bias
        for module in decoder.transformer.modules()
        if isinstance(module, Attention) and module.k_proj.bias is not None
    ]
    return params


def freeze_untrained_decoder_parameters(sam: Sam, variant: str) -> None:
    """Freeze what never trains, so that only trained tensors leave a site."""
    for param in untrained_decoder_parameters(sam.mask_decoder, variant):
        param.requires_grad_(False)


def build_samba_model(cfg: SambaConfig, seed: int) -> SambaModel:
    """Deterministic SAMBA model: same weights on every site for the same seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam, description = build_sam(cfg)
        freeze_encoders(sam)
        freeze_untrained_decoder_parameters(sam, cfg.variant)
        voting = build_voting_net(cfg) if cfg.voting else None
        localizer = None
        if cfg.localizer != "off":
            from fedmed.tasks.samba.localizer import build_localizer

            localizer = build_localizer(cfg)
    return SambaModel(sam, voting, localizer, description)


def initial_decoder(cfg: SambaConfig, seed: int) -> nn.Module:
    """The decoder exactly as :func:`build_samba_model` creates it (zero-shot SAM)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam, _ = build_sam(cfg)
    sam.mask_decoder.eval()
    return sam.mask_decoder


def exchanged_prefixes(cfg: SambaConfig) -> tuple[str, ...]:
    """Name prefixes of the tensors that leave a site."""
    prefixes = [DECODER_PREFIX]
    if cfg.voting:
        prefixes.append(VOTING_PREFIX)
    if cfg.localizer == "federated":
        prefixes.append(LOCALIZER_PREFIX)
    return tuple(prefixes)
