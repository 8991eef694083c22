"""SAMBA's YOLOv8 tumour localizer: YOLO-format slice boxes, offline training.

SAMBA Sec. 2.2: at inference there is no ground-truth mask, so a YOLOv8
localizer trained on the 2D slices' tumour boxes provides the box prompts;
the paper reports how often it tells tumour slices from background ones.
As in the authors' label export, one class, tight boxes, empty slices kept
in training with probability 1/5 (all kept for validation), mosaic and
mixup off, flips 0.3, Adam with a cosine schedule.

Everything runs offline: ``YOLO_OFFLINE=1``, a private ``YOLO_CONFIG_DIR``
when none is set, settings ``sync=False``, ``amp=False`` (the AMP check
would fetch weights) and ``plots=False`` (plots fetch a font).
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from fedmed.data.brats import BratsCase
from fedmed.tasks.samba.config import SambaConfig
from fedmed.tasks.samba.data import normalise_slice, num_slices, take_slice
from fedmed.tasks.samba.prompts import mask_extent

logger = logging.getLogger(__name__)

CLASS_NAME = "tumour"
_NETWORK_SETTINGS = ("sync", "clearml", "comet", "dvc", "mlflow", "raytune", "wandb")
"""ultralytics settings that phone home or log to third parties: all turned off."""
_DETECT_CHUNK = 64


def prepare_ultralytics() -> None:
    """Make ultralytics hermetic before its first import (env read at import time)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    if "YOLO_CONFIG_DIR" not in os.environ:
        os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="fedmed-yolo-")
    from ultralytics.utils import SETTINGS

    quiet = {key: False for key in _NETWORK_SETTINGS if SETTINGS.get(key, False)}
    if quiet:
        SETTINGS.update(quiet)


def build_localizer(cfg: SambaConfig) -> nn.Module:
    """One-class YOLOv8 ``DetectionModel`` from ``yolo-model`` (+ ``yolo-weights``)."""
    prepare_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(cfg.yolo_model, nc=1, verbose=False)
    model.names = {0: CLASS_NAME}
    if cfg.yolo_weights:
        _load_weights(model, Path(cfg.yolo_weights))
    return model


def _load_weights(model: nn.Module, path: Path) -> None:
    """Load user YOLO weights: a safetensors state dict or an ultralytics ``.pt``."""
    if not path.is_file():
        raise FileNotFoundError(
            f"YOLO weights {path} not found: set samba.yolo-weights to a local "
            "yolov8n.pt (ultralytics release) or a .safetensors state dict, or leave "
            "it empty to train from scratch"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:  # a user-supplied ultralytics checkpoint (pickled module, trusted local file)
        from ultralytics.nn.tasks import load_checkpoint

        state = load_checkpoint(str(path))[0].float().state_dict()
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(fitting, strict=False)
    logger.info("loaded %d/%d YOLO tensors from %s", len(fitting), len(own), path)


def _write_slice(folder: Path, name: str, image: np.ndarray, box) -> None:
    Image.fromarray(image).save(folder / "images" / f"{name}.png")
    label = folder / "labels" / f"{name}.txt"
    if box is None:
        label.write_text("")
        return
    height, width = image.shape
    x0, y0, x1, y1 = box[0], box[1], box[2] + 1, box[3] + 1  # pixel edges
    label.write_text(
        f"0 {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
        f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}\n"
    )


def export_split(
    cases: Sequence[BratsCase],
    folder: Path,
    cfg: SambaConfig,
    rng: np.random.Generator,
    keep_empty: float,
) -> int:
    """Write PNG slices of ``yolo-modality`` and YOLO labels; returns their count."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    count = 0
    for case in cases:
        volume = case.load()
        brain = volume.brain_mask()
        for view in cfg.view_list:
            for index in range(num_slices(volume.shape, view)):
                if not take_slice(brain, view, index).any():
                    continue
                box = mask_extent(take_slice(volume.labels, view, index) > 0)
                if box is None and rng.random() >= keep_empty:
                    continue
                raw = take_slice(volume.images[cfg.yolo_modality], view, index)
                name = f"{case.case_id}_{view}{index:03d}"
                _write_slice(folder, name, normalise_slice(raw), box)
                count += 1
    return count


def export_yolo_dataset(
    out: Path,
    train: Sequence[BratsCase],
    val: Sequence[BratsCase],
    cfg: SambaConfig,
    rng: np.random.Generator,
) -> Path:
    """YOLO dataset (``data.yaml``, images, labels); train validates if no val."""
    export_split(train, out / "train", cfg, rng, cfg.yolo_empty_keep)
    export_split(val or train, out / "val", cfg, rng, 1.0)
    data_yaml = out / "data.yaml"
    data_yaml.write_text(
        f"path: {out.resolve()}\ntrain: train/images\nval: val/images\n"
        f"names:\n  0: {CLASS_NAME}\n"
    )
    return data_yaml


def train_localizer(
    localizer: nn.Module,
    data_yaml: Path,
    cfg: SambaConfig,
    workdir: Path,
    seed: int,
    epochs: int,
) -> dict[str, float]:
    """Train ``localizer`` in place for ``epochs`` with ultralytics, offline.

    ``epochs`` is this round's share of ``samba.yolo-epochs``
    (:mod:`fedmed.tasks.samba.schedule`). The trainer is handed the in-memory
    model (so federated weights are the starting point); its EMA weights,
    which ultralytics treats as the result, are copied back into ``localizer``.
    """
    prepare_ultralytics()
    from ultralytics.models.yolo.detect import DetectionTrainer

    overrides = {
        "model": cfg.yolo_model, "data": str(data_yaml), "epochs": epochs,
        "imgsz": cfg.yolo_imgsz, "batch": cfg.yolo_batch, "workers": 0,
        "device": "0" if torch.cuda.is_available() else "cpu", "amp": False,
        "plots": False, "project": str(workdir), "name": "train", "exist_ok": True,
        "verbose": False, "optimizer": "Adam", "cos_lr": True, "mosaic": 0.0,
        "mixup": 0.0, "close_mosaic": 0, "flipud": 0.3, "fliplr": 0.3, "hsv_h": 0.0,
        "hsv_s": 0.0, "hsv_v": 0.0, "seed": seed, "deterministic": True,
        "patience": 30, "pretrained": False,
    }  # fmt: skip
    trainer = DetectionTrainer(overrides=overrides)
    trainer.model = localizer
    trainer.train()
    localizer.load_state_dict(trainer.ema.ema.float().state_dict())
    metrics = getattr(trainer, "metrics", None) or {}
    return {
        "yolo_map50": float(metrics.get("metrics/mAP50(B)", float("nan"))),
        "yolo_recall": float(metrics.get("metrics/recall(B)", float("nan"))),
    }


def detect_boxes(
    localizer: nn.Module, images: Sequence[np.ndarray], cfg: SambaConfig
) -> list[np.ndarray | None]:
    """Highest-confidence box per uint8 slice (XYXY slice pixels), or None if none.

    Runs ultralytics' predictor on a copy (the predictor fuses conv+bn in
    place, which would change the exchanged tensors).
    """
    if not images:
        return []
    prepare_ultralytics()
    from ultralytics import YOLO

    yolo = YOLO(cfg.yolo_model, task="detect", verbose=False)
    yolo.model = copy.deepcopy(localizer).float().eval()
    device = "0" if torch.cuda.is_available() else "cpu"
    rgb = [np.repeat(image[:, :, None], 3, axis=2) for image in images]
    results = []
    for start in range(0, len(rgb), _DETECT_CHUNK):
        results += yolo.predict(
            rgb[start : start + _DETECT_CHUNK],
            imgsz=cfg.yolo_imgsz,
            conf=cfg.yolo_conf,
            verbose=False,
            device=device,
        )
    boxes: list[np.ndarray | None] = []
    for result in results:
        if len(result.boxes) == 0:
            boxes.append(None)
            continue
        best = int(result.boxes.conf.argmax())
        x0, y0, x1, y1 = result.boxes.xyxy[best].cpu().numpy().astype(np.float64)
        # Pixel edges back to the inclusive pixel indices the SAM boxes use.
        boxes.append(np.array([x0, y0, max(x1 - 1, x0), max(y1 - 1, y0)]))
    return boxes
