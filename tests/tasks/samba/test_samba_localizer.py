"""YOLOv8 localizer: YOLO-format export and one offline training epoch."""

from __future__ import annotations

import socket

import numpy as np
import torch

from fedmed.data.brats import find_cases
from fedmed.tasks.samba.localizer import (
    build_localizer,
    detect_boxes,
    export_split,
    export_yolo_dataset,
    train_localizer,
)


def test_export_writes_tight_normalised_boxes(phantoms, tmp_path, tiny_config):
    # Prepare
    cfg = tiny_config(localizer="local")
    case = find_cases(phantoms / "site_0")[0]
    labels = case.load().labels
    # Execute
    count = export_split([case], tmp_path, cfg, np.random.default_rng(0), 1.0)
    # Assert: the z slice with the most tumour, label = extent / slice size
    z = int(np.argmax((labels > 0).sum(axis=(0, 1))))
    rows, cols = np.nonzero(labels[:, :, z] > 0)
    line = (tmp_path / "labels" / f"{case.case_id}_z{z:03d}.txt").read_text().split()
    expected = [
        (cols.min() + cols.max() + 1) / 2 / 48,
        (rows.min() + rows.max() + 1) / 2 / 48,
        (cols.max() + 1 - cols.min()) / 48,
        (rows.max() + 1 - rows.min()) / 48,
    ]
    assert line[0] == "0"
    np.testing.assert_allclose([float(v) for v in line[1:]], expected, atol=1e-5)
    empty = [p for p in (tmp_path / "labels").iterdir() if p.read_text() == ""]
    assert empty and count == len(list((tmp_path / "images").iterdir()))


def test_yolo_trains_one_epoch_offline(phantoms, tmp_path, tiny_config, monkeypatch):
    # Prepare: any network attempt fails the test
    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    cfg = tiny_config(localizer="local", yolo_imgsz=64, yolo_batch=8)
    cases = find_cases(phantoms / "site_1")
    rng = np.random.default_rng(0)
    data_yaml = export_yolo_dataset(tmp_path / "data", cases[:1], cases[1:2], cfg, rng)
    localizer = build_localizer(cfg)
    before = {k: v.clone() for k, v in localizer.state_dict().items()}
    # Execute
    metrics = train_localizer(
        localizer, data_yaml, cfg, tmp_path / "runs", seed=0, epochs=1
    )
    volume = cases[2].load()
    images = [volume.images["flair"][:, :, z].astype(np.uint8) for z in range(4)]
    boxes = detect_boxes(localizer, images, cfg)
    # Assert
    changed = [
        k for k, v in localizer.state_dict().items() if not torch.equal(v, before[k])
    ]
    assert len(changed) > 100
    assert set(metrics) == {"yolo_map50", "yolo_recall"}
    assert len(boxes) == 4
    assert attempts == []
