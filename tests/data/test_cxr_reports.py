"""Chest X-ray report loaders (IU X-ray, Montgomery) and the synthetic writer."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from fedmed.data.cxr_reports import (
    ReportImageDataset,
    load_iu_xray,
    load_montgomery,
    montgomery_prompt,
    split_pairs,
)
from fedmed.data.synth_cxr import FINDINGS, render_frontal, report_for, synthesize


def test_synthetic_sites_read_back_with_the_iu_xray_loader(tmp_path):
    # Execute
    paths = synthesize(
        tmp_path, num_sites=2, seed=0, size=32, cases_per_site=5, heldout_cases=3
    )
    # Assert
    assert [p.name for p in paths] == ["site_0", "site_1", "heldout"]
    frontal = load_iu_xray(tmp_path / "site_0")
    lateral = load_iu_xray(tmp_path / "site_0", projection="Lateral")
    assert len(frontal) == 5 and len(lateral) == 5
    assert all("1001" in p.image.name for p in frontal)
    assert {p.uid for p in frontal}.isdisjoint({p.uid for p in load_iu_xray(paths[1])})
    pixels, report = ReportImageDataset(frontal, 24)[0]
    assert pixels.shape == (3, 24, 24) and pixels.min() >= -1 and pixels.max() <= 1
    assert report == frontal[0].report and report.endswith(".")


def test_report_words_control_visible_findings():
    rng = np.random.default_rng(0)
    normal = dict.fromkeys(FINDINGS, False)
    base = render_frontal(normal, 64, np.random.default_rng(0))
    effusion = render_frontal(
        {**normal, "left_effusion": True}, 64, np.random.default_rng(0)
    )
    heart = render_frontal({**normal, "cardiomegaly": True}, 64, rng)
    text, _ = report_for({**normal, "left_effusion": True})
    # patient's left = viewer's right; the lung base is the lower part of the image
    rows, cols = np.nonzero(effusion - base > 0.3)
    assert "left pleural effusion" in text and "right" not in text
    assert len(rows) > 40 and rows.min() >= 32 and cols.min() >= 32
    assert (heart > 0.77).sum() > 1.5 * (base > 0.77).sum()
    assert "enlarged" in report_for({**normal, "cardiomegaly": True})[0]
    assert "lungs are clear" in report_for(normal)[0]


def test_iu_loader_skips_empty_findings_and_names_missing_files(tmp_path):
    (tmp_path / "images" / "images_normalized").mkdir(parents=True)
    for name in ("1_IM-1.png", "2_IM-2.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(
            tmp_path / "images" / "images_normalized" / name
        )
    with (tmp_path / "indiana_reports.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "uid",
                "MeSH",
                "Problems",
                "image",
                "indication",
                "comparison",
                "findings",
                "impression",
            ]
        )
        writer.writerow(["1", "normal", "normal", "x", "", "", "Heart  normal.", "ok"])
        writer.writerow(["2", "normal", "normal", "x", "", "", "", "ok"])
    with (tmp_path / "indiana_projections.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uid", "filename", "projection"])
        writer.writerows(
            [["1", "1_IM-1.png", "Frontal"], ["2", "2_IM-2.png", "Frontal"]]
        )
    pairs = load_iu_xray(tmp_path)
    assert [(p.uid, p.report) for p in pairs] == [("1", "Heart normal.")]
    with pytest.raises(FileNotFoundError, match="indiana_reports.csv"):
        load_iu_xray(tmp_path / "nowhere")


def test_montgomery_loader_builds_sex_age_finding_prompts(tmp_path):
    root = tmp_path / "MontgomerySet"
    (root / "CXR_png").mkdir(parents=True)
    (root / "ClinicalReadings").mkdir()
    for stem, text in (
        ("MCUCXR_0001_0", "Patient's Sex: F\nPatient's Age: 040Y\nnormal\n"),
        (
            "MCUCXR_0104_1",
            "Patient's Sex: M\nPatient's Age: 052Y\nright upper lobe cavity\n",
        ),
    ):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(
            root / "CXR_png" / f"{stem}.png"
        )
        (root / "ClinicalReadings" / f"{stem}.txt").write_text(text)
    pairs = load_montgomery(tmp_path)
    assert [p.report for p in pairs] == [
        "female, 40 years, normal",
        "male, 52 years, right upper lobe cavity",
    ]
    assert montgomery_prompt("Patient's Sex: O\n") == "o"
    (root / "ClinicalReadings" / "MCUCXR_0001_0.txt").unlink()
    with pytest.raises(FileNotFoundError, match="MCUCXR_0001_0.txt"):
        load_montgomery(tmp_path)


def test_split_follows_the_paper_fractions():
    pairs = list(range(100))
    train, val, test = split_pairs(pairs, (0.8, 0.16, 0.04), seed=0)  # type: ignore[arg-type]
    assert (len(train), len(val), len(test)) == (80, 16, 4)
    assert sorted(train + val + test) == pairs
    assert split_pairs(pairs, (0.8, 0.16, 0.04), seed=0)[0] == train  # type: ignore[arg-type]
    assert torch.tensor(train).ne(torch.arange(80)).any()
