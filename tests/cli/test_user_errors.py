"""User mistakes end in one line on stderr, a non-zero exit and nothing written."""

import numpy as np
import pytest
import torch

from fedmed.cli import main
from fedmed.data.medmnist_npz import load_split, save_npz


def run_main(args, capsys) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return exited.value.code, lines


def test_a_mistyped_data_dir_is_one_line_and_writes_nothing(tmp_path, capsys):
    code, lines = run_main(
        ["simulate", "--data-dir", tmp_path / "dat", "--out", tmp_path / "run"],
        capsys,
    )
    assert code == 1
    assert len(lines) == 1 and "dat does not exist" in lines[0]
    assert "--synth" in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_share_without_a_gpu_is_refused_before_anything_starts(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("x")
    code, lines = run_main(
        ["simulate", "--gpus-per-site", "0.25", "--data-dir", tmp_path / "data"]
        + ["--out", tmp_path / "run"],
        capsys,
    )
    assert code == 1 and len(lines) == 1 and "no CUDA device" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_half_made_run_folder_says_how_to_resume_or_remove_it(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    code, lines = run_main(["simulate", "--data-dir", tmp_path, "--out", run], capsys)
    assert code == 1 and len(lines) == 1
    assert "--resume" in lines[0] and f"rm -r {run}" in lines[0]
    assert [p.name for p in run.iterdir()] == ["config.json"]


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["--set", "num-server-rounds=abc"], "expected an integer, found 'abc'"),
        (["--set", "num-server-rounds=5", "--rounds", "3"], "disagree"),
        (["--set", "no-such-key=1"], "unknown run-config key 'no-such-key'"),
    ],
)
def test_bad_overrides_are_errors_not_silently_overridden(
    tmp_path, capsys, sets, expected
):
    code, lines = run_main(
        ["simulate", "--data-dir", tmp_path, "--out", tmp_path / "run", *sets],
        capsys,
    )
    assert code == 1 and len(lines) == 1 and expected in lines[0]
    assert not (tmp_path / "run").exists()


def test_report_on_a_missing_folder_creates_nothing(tmp_path, capsys):
    code, lines = run_main(["report", tmp_path / "typo"], capsys)
    expected = f"error: run folder {tmp_path / 'typo'} does not exist"
    assert code == 1 and lines == [expected]
    assert not (tmp_path / "typo").exists()


def test_synth_with_an_unofficial_size_leaves_nothing_behind(tmp_path, capsys):
    code, _ = run_main(
        ["data", "synth", "dermamnist", "--out", tmp_path / "d", "--size", "30"],
        capsys,
    )
    assert code != 0 and not (tmp_path / "d").exists()


def _truncated_npz(folder):
    images = np.zeros((10, 28, 28, 3), dtype=np.uint8)
    labels = np.arange(10) % 7
    path = save_npz(folder, {s: (images, labels) for s in ("train", "val", "test")})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_a_truncated_npz_is_named_before_the_run_starts(tmp_path, capsys):
    path = _truncated_npz(tmp_path / "data" / "site_1")
    code, lines = run_main(
        ["simulate", "--data-dir", tmp_path / "data", "--out", tmp_path / "run"],
        capsys,
    )
    assert code == 1 and len(lines) == 1
    assert str(path) in lines[0] and "truncated or corrupt" in lines[0]
    assert not (tmp_path / "run").exists()


def test_the_loader_names_a_truncated_npz(tmp_path):
    path = _truncated_npz(tmp_path)
    with pytest.raises(ValueError, match="truncated or corrupt") as err:
        load_split(tmp_path)
    assert str(err.value).count(str(path)) == 1


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "report", str(tmp_path / "typo")])


@pytest.mark.e2e
@pytest.mark.slow
def test_a_run_where_every_site_fails_exits_non_zero(tmp_path):
    import subprocess

    from fedmed.commands import simulate_command
    from tests.e2e.test_simulation import REPO

    config = REPO / "configs" / "classify_tiny.toml"
    command = simulate_command(
        "classify",
        tmp_path / "run",
        tmp_path / "data",
        2,
        1,
        run_config=config,
        sets=["faults=raise@0:*,raise@1:*"],
    )
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: run ") and "0 of 1 rounds completed" in last
    assert "every site failed the train phase of round 1" in last
    config_json = (tmp_path / "run" / "config.json").read_text()
    assert '"synthetic-data": true' in config_json
