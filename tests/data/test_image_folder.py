"""Image folders with labels: labels-CSV and class-folder layouts."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from fedmed.data.image_folder import (
    LabelsLayout,
    assign_splits,
    load_rgb,
    read_image_folder,
)


def _image(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


def _csv(path, header, rows):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def test_labels_csv_with_grades_splits_and_missing_suffixes(tmp_path):
    # Prepare: Messidor-2 style grades, one ungradable row, ids without suffix
    for name in ("a.png", "b.jpg", "c.png"):
        _image(tmp_path / "images" / name)
    _csv(
        tmp_path / "labels.csv",
        ("image_id", "grade", "split"),
        [("a", "2", "train"), ("b.jpg", "0", "test"), ("c", "", "train")],
    )
    layout = LabelsLayout(image_column="image_id", label_column="grade")
    # Execute
    records = read_image_folder(tmp_path, layout)
    # Assert
    assert [(r.path.name, r.label, r.split) for r in records] == [
        ("a.png", 2, "train"),
        ("b.jpg", 0, "test"),
    ]


def test_one_hot_columns_in_configured_class_order(tmp_path):
    # Prepare: ISIC 2018 ground truth (one-hot), columns in another order
    for name in ("ISIC_1.jpg", "ISIC_2.jpg"):
        _image(tmp_path / "images" / name)
    _csv(
        tmp_path / "labels.csv",
        ("image", "NV", "MEL", "BCC"),
        [("ISIC_1", "0.0", "1.0", "0.0"), ("ISIC_2", "0.0", "0.0", "1.0")],
    )
    # Execute
    records = read_image_folder(
        tmp_path, LabelsLayout(label_column=""), ("MEL", "NV", "BCC")
    )
    # Assert
    assert [r.label for r in records] == [0, 2]


def test_class_folders_with_official_splits(tmp_path):
    # Prepare: <root>/<split>/<class>/<image>
    _image(tmp_path / "train" / "normal" / "x.png")
    _image(tmp_path / "train" / "covid" / "y.png")
    _image(tmp_path / "test" / "covid" / "z.png")
    # Execute
    records = read_image_folder(tmp_path, LabelsLayout())
    # Assert: classes sorted by name -> covid 0, normal 1
    got = sorted((r.split, r.path.name, r.label) for r in records)
    assert got == [("test", "z.png", 0), ("train", "x.png", 1), ("train", "y.png", 0)]


def test_string_labels_need_class_names(tmp_path):
    _image(tmp_path / "images" / "a.png")
    _csv(tmp_path / "labels.csv", ("image", "label"), [("a.png", "benign")])
    with pytest.raises(ValueError, match="fpt.class-names"):
        read_image_folder(tmp_path, LabelsLayout())
    records = read_image_folder(tmp_path, LabelsLayout(), ("malignant", "benign"))
    assert records[0].label == 1


def test_missing_files_name_what_to_put_where(tmp_path):
    _csv(tmp_path / "labels.csv", ("image", "label"), [("gone", "1")])
    with pytest.raises(FileNotFoundError, match="gone.*images"):
        read_image_folder(tmp_path, LabelsLayout())
    with pytest.raises(FileNotFoundError, match="labels.csv"):
        read_image_folder(tmp_path / "empty_site", LabelsLayout())


def test_assign_splits_is_seeded_70_10_20_and_keeps_given_splits(tmp_path):
    # Prepare
    _image(tmp_path / "images" / "kept.png")
    rows = [(f"i{k}.png", "0", "") for k in range(20)] + [("kept.png", "1", "val")]
    for name, _, _ in rows[:-1]:
        _image(tmp_path / "images" / name)
    _csv(tmp_path / "labels.csv", ("image", "label", "split"), rows)
    records = read_image_folder(tmp_path, LabelsLayout())
    # Execute
    first, again = assign_splits(records, seed=5), assign_splits(records, seed=5)
    # Assert
    assert first == again
    counts = {
        s: sum(r.split == s for r in first[:-1]) for s in ("train", "val", "test")
    }
    assert counts == {"train": 14, "val": 2, "test": 4}
    assert first[-1].split == "val"


def test_load_rgb_returns_unit_range_channels_first(tmp_path):
    _image(tmp_path / "grey.png", value=255)
    image = load_rgb(tmp_path / "grey.png")
    assert image.shape == (3, 8, 8) and torch.all(image == 1.0)
