"""BraTS label codes read from literal segmentation volumes, checked against the
BraTS region definitions by hand.

The files are written here with literal codes and literal file names, never
through the project's own label table or suffix table, so a swapped entry in
``fedmed.data.brats.LABEL_CODES`` changes the counts below and fails.

BraTS definitions: ET = enhancing tumour; TC = ET + necrotic / non-enhancing
core; WT = TC + oedema. BraTS 2021 codes: 1 necrotic core, 2 oedema,
4 enhancing tumour. BraTS 2023 / BraTS-Africa codes: 1 NETC, 2 SNFH (oedema),
3 ET.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedmed.data.brats import BratsFormatError, find_cases, region_masks

SHAPE = (6, 5, 4)


def _write_literal_case(
    root: Path, case_id: str, files: dict[str, str], seg: np.ndarray
) -> None:
    """One case folder: constant MRIs and ``seg`` under the literal file names."""
    folder = root / case_id
    folder.mkdir(parents=True)
    affine = np.eye(4)
    for kind, name in files.items():
        data = seg if kind == "seg" else np.full(SHAPE, 100.0, dtype=np.float32)
        nib.save(nib.Nifti1Image(data, affine), str(folder / name))


def _seg_with_counts(counts: dict[int, int]) -> np.ndarray:
    """A label volume holding exactly ``counts[code]`` voxels of each code."""
    flat = np.zeros(int(np.prod(SHAPE)), dtype=np.uint8)
    start = 0
    for code, count in counts.items():
        flat[start : start + count] = code
        start += count
    return np.random.default_rng(0).permutation(flat).reshape(SHAPE)


def _region_counts(root: Path) -> dict[str, int]:
    volume = find_cases(root)[0].load()
    return {name: int(mask.sum()) for name, mask in region_masks(volume.labels).items()}


def test_brats2021_codes_1_2_4_give_hand_counted_et_tc_wt(tmp_path):
    # Prepare: 5 necrotic-core (1), 7 oedema (2) and 3 enhancing (4) voxels
    seg = _seg_with_counts({1: 5, 2: 7, 4: 3})
    case = "BraTS2021_00042"
    files = {
        "t1": f"{case}_t1.nii.gz",
        "t1ce": f"{case}_t1ce.nii.gz",
        "t2": f"{case}_t2.nii.gz",
        "flair": f"{case}_flair.nii.gz",
        "seg": f"{case}_seg.nii.gz",
    }
    _write_literal_case(tmp_path, case, files, seg)
    # Execute
    counts = _region_counts(tmp_path)
    # Assert: ET = 3; TC = ET + core = 3 + 5; WT = TC + oedema = 8 + 7
    assert counts == {"et": 3, "tc": 8, "wt": 15}


def test_brats2023_africa_codes_1_2_3_give_hand_counted_et_tc_wt(tmp_path):
    # Prepare: 4 NETC (1), 6 SNFH (2) and 2 ET (3) voxels
    seg = _seg_with_counts({1: 4, 2: 6, 3: 2})
    case = "BraTS-SSA-00042-000"
    files = {
        "t1": f"{case}-t1n.nii.gz",
        "t1ce": f"{case}-t1c.nii.gz",
        "t2": f"{case}-t2w.nii.gz",
        "flair": f"{case}-t2f.nii.gz",
        "seg": f"{case}-seg.nii.gz",
    }
    _write_literal_case(tmp_path, case, files, seg)
    # Execute
    counts = _region_counts(tmp_path)
    # Assert: ET = 2; TC = ET + NETC = 2 + 4; WT = TC + SNFH = 6 + 6
    assert counts == {"et": 2, "tc": 6, "wt": 12}


def test_brats2021_file_with_code_3_is_refused(tmp_path):
    # Prepare: code 3 is unused in BraTS 2021 (enhancing tumour is 4 there)
    case = "BraTS2021_00043"
    seg = _seg_with_counts({1: 2, 3: 2})
    files = {
        "t1": f"{case}_t1.nii.gz",
        "t1ce": f"{case}_t1ce.nii.gz",
        "t2": f"{case}_t2.nii.gz",
        "flair": f"{case}_flair.nii.gz",
        "seg": f"{case}_seg.nii.gz",
    }
    _write_literal_case(tmp_path, case, files, seg)
    # Execute / Assert
    with pytest.raises(BratsFormatError, match=r"unknown label\(s\) \[3\]"):
        find_cases(tmp_path)[0].load()
