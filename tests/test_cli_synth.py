"""`fedmed data synth <kind>` writes each task's real on-disk format."""

import csv

import nibabel as nib
import numpy as np
from typer.testing import CliRunner

from fedmed.cli import app

runner = CliRunner()


def _invoke(*args):
    result = runner.invoke(app, ["data", "synth", *args])
    assert result.exit_code == 0, result.output
    return result


def test_synth_brats_writes_both_namings_with_matching_shapes(tmp_path):
    _invoke("brats", "--out", str(tmp_path), "--sites", "2", "--cases", "1")
    site0 = next((tmp_path / "site_0").iterdir())
    site1 = next((tmp_path / "site_1").iterdir())
    assert (site0 / f"{site0.name}_flair.nii.gz").is_file()  # BraTS 2021 naming
    assert (site1 / f"{site1.name}-t2f.nii.gz").is_file()  # BraTS 2023 naming
    seg = np.asarray(nib.load(site0 / f"{site0.name}_seg.nii.gz").dataobj)
    flair = nib.load(site0 / f"{site0.name}_flair.nii.gz")
    assert seg.shape == flair.shape
    assert set(np.unique(seg)) <= {0, 1, 2, 4} and (seg > 0).any()


def test_synth_brats_rejects_an_unknown_naming(tmp_path):
    result = runner.invoke(
        app, ["data", "synth", "brats", "--out", str(tmp_path), "--naming", "2019"]
    )
    assert result.exit_code != 0
    assert not any(tmp_path.iterdir())


def test_synth_cxr_reports_writes_pairs_per_site(tmp_path):
    _invoke(
        "cxr-reports",
        "--out",
        str(tmp_path),
        "--sites",
        "2",
        "--cases",
        "3",
        "--heldout-cases",
        "2",
        "--size",
        "32",
    )
    for folder in ("site_0", "site_1", "heldout"):
        files = list((tmp_path / folder).rglob("*"))
        assert any(f.suffix == ".png" for f in files), folder


def test_synth_highres_writes_images_and_labels_csv(tmp_path):
    _invoke(
        "highres",
        "--out",
        str(tmp_path),
        "--sites",
        "2",
        "--images",
        "3",
        "--heldout-images",
        "2",
        "--size",
        "64",
    )
    for folder, count in (("site_0", 3), ("site_1", 3), ("heldout", 2)):
        with open(tmp_path / folder / "labels.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == count
        assert all(
            (tmp_path / folder / "images" / row["image"]).is_file()
            or (tmp_path / folder / row["image"]).is_file()
            for row in rows
        )
