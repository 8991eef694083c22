"""BraTS loading in both namings, label mapping, clear errors, and phantom realism."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from fedmed.data.brats import (
    BratsFormatError,
    find_cases,
    region_masks,
)
from fedmed.data.synth_brats import HIGH_QUALITY, synth_case, synthesize, write_case


@pytest.fixture()
def one_phantom():
    rng = np.random.default_rng(3)
    return synth_case(HIGH_QUALITY, (24, 24, 16), rng)


def test_both_namings_load_to_the_same_regions(tmp_path, one_phantom):
    # Prepare
    volumes, labels = one_phantom
    write_case(tmp_path / "a", "BraTS2021_00001", "2021", volumes, labels)
    write_case(tmp_path / "b", "BraTS-SSA-00001-000", "2023", volumes, labels)
    # Execute
    old = find_cases(tmp_path / "a")[0]
    new = find_cases(tmp_path / "b")[0]
    old_volume, new_volume = old.load(), new.load()
    # Assert
    assert (old.naming, new.naming) == ("2021", "2023")
    stored_old = np.asarray(nib.load(old.path("seg")).dataobj)
    stored_new = np.asarray(nib.load(new.path("seg")).dataobj)
    assert 4 in stored_old and 3 not in stored_old
    assert 3 in stored_new and 4 not in stored_new
    np.testing.assert_array_equal(old_volume.labels, labels)
    np.testing.assert_array_equal(new_volume.labels, labels)
    for region, mask in region_masks(old_volume.labels).items():
        np.testing.assert_array_equal(mask, region_masks(new_volume.labels)[region])
    np.testing.assert_array_equal(old_volume.images["t1ce"], volumes["t1ce"])
    np.testing.assert_array_equal(new_volume.images["t1ce"], volumes["t1ce"])


def test_regions_are_nested_brats_unions():
    # Prepare
    labels = np.array([0, 1, 2, 3], dtype=np.uint8)
    # Execute
    regions = region_masks(labels)
    # Assert
    assert regions["et"].tolist() == [False, False, False, True]
    assert regions["tc"].tolist() == [False, True, False, True]
    assert regions["wt"].tolist() == [False, True, True, True]


def test_missing_modality_names_case_and_file(tmp_path, one_phantom):
    # Prepare
    volumes, labels = one_phantom
    case_dir = write_case(tmp_path, "BraTS-SSA-00007-000", "2023", volumes, labels)
    (case_dir / "BraTS-SSA-00007-000-t1c.nii.gz").unlink()
    case = find_cases(tmp_path)[0]
    # Execute / Assert
    with pytest.raises(FileNotFoundError, match="BraTS-SSA-00007-000-t1c.nii.gz"):
        case.load()


def test_unknown_label_names_case_file_and_value(tmp_path, one_phantom):
    # Prepare: a 2021-named case whose seg uses the 2023 code 3 for ET
    volumes, labels = one_phantom
    case_dir = write_case(tmp_path, "BraTS2021_00009", "2021", volumes, labels)
    seg = case_dir / "BraTS2021_00009_seg.nii.gz"
    nib.save(nib.Nifti1Image(labels, np.eye(4)), str(seg))
    case = find_cases(tmp_path)[0]
    # Execute / Assert
    with pytest.raises(BratsFormatError, match=r"BraTS2021_00009.*_seg.*\[3\]"):
        case.load()


def test_shape_mismatch_names_the_file(tmp_path, one_phantom):
    # Prepare
    volumes, labels = one_phantom
    case_dir = write_case(tmp_path, "BraTS2021_00002", "2021", volumes, labels)
    small = np.zeros((24, 24, 15), dtype=np.float32)
    nib.save(
        nib.Nifti1Image(small, np.eye(4)), str(case_dir / "BraTS2021_00002_t2.nii.gz")
    )
    case = find_cases(tmp_path)[0]
    # Execute / Assert
    with pytest.raises(
        BratsFormatError, match=r"BraTS2021_00002_t2.nii.gz.*\(24, 24, 15\)"
    ):
        case.load()


def test_synthesize_writes_sites_in_both_namings(tmp_path):
    # Execute
    synthesize(tmp_path, num_sites=2, cases_per_site=1, seed=1, shape=(24, 24, 16))
    # Assert
    namings = {
        folder: [c.naming for c in find_cases(tmp_path / folder)]
        for folder in ("site_0", "site_1", "heldout")
    }
    assert namings["site_0"] == ["2021"] and namings["site_1"] == ["2023"]
    assert len(namings["heldout"]) == 1


def test_phantom_contrasts_and_site_shift(one_phantom):
    # Prepare
    volumes, labels = one_phantom
    rng = np.random.default_rng(3)
    from fedmed.data.synth_brats import LOW_QUALITY

    low_volumes, low_labels = synth_case(LOW_QUALITY, (24, 24, 16), rng)
    enhancing, oedema = labels == 3, labels == 2
    # Assert: enhancement shows on T1CE only, oedema is bright on FLAIR
    assert volumes["t1ce"][enhancing].mean() > 1.4 * volumes["t1"][enhancing].mean()
    healthy = (labels == 0) & (volumes["flair"] > 0)
    assert volumes["flair"][oedema].mean() > 1.5 * np.median(volumes["flair"][healthy])
    # the Africa-like profile is dimmer and noisier in healthy tissue
    low_healthy = (low_labels == 0) & (low_volumes["t1"] > 0)
    high, low = volumes["t1"][healthy], low_volumes["t1"][low_healthy]
    assert np.median(low) < 0.6 * np.median(high)
    assert low.std() / low.mean() > 1.5 * high.std() / high.mean()
