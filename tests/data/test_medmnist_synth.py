from pathlib import Path

import numpy as np
import pytest
from medmnist import DermaMNIST

from fedmed.data.medmnist_npz import load_split
from fedmed.data.synth_dermamnist import synthesize


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("derma")
    synthesize(out, num_sites=2, size=28, seed=3, samples_per_site=100)
    return out


def test_synthetic_npz_loads_through_medmnist_dataset_class(synth_dir):
    # Execute: medmnist's own class opens the file and yields its real item format
    dataset = DermaMNIST(split="train", root=str(synth_dir / "site_0"), download=False)
    image, target = dataset.imgs[0], dataset.labels[0]
    # Assert: the real release's keys, dtypes and shapes
    assert dataset.imgs.dtype == np.uint8 and dataset.imgs.shape[1:] == (28, 28, 3)
    assert dataset.labels.shape == (70, 1) and target.dtype == np.uint8
    assert image.shape == (28, 28, 3)
    assert set(np.unique(dataset.labels)) <= set(range(7))


def test_sites_differ_in_acquisition_and_labels(synth_dir):
    a_img, a_lab = load_split(synth_dir / "site_0", split="train")
    b_img, b_lab = load_split(synth_dir / "site_1", split="train")
    assert abs(float(a_img.std()) - float(b_img.std())) > 0.5
    assert not np.array_equal(np.bincount(a_lab, minlength=7), np.bincount(b_lab, minlength=7))


def test_missing_file_error_names_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dermamnist_64\.npz.*" + tmp_path.name):
        load_split(tmp_path, size=64)
