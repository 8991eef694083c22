"""Checks a run passes before anything is written or any worker starts.

A typo in ``--data-dir``, a GPU that is not there, a run folder left by a
killed run or an unreadable data file must be refused in seconds with one
line that says what to do, not minutes later inside Ray with a traceback
(or, worse, answered with synthetic data).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

from fedmed.config import ConfigError, Scalar, parse_platform

NPZ_CHECK_LIMIT = 1000  # npz files opened before a run; more are left to the loaders


def check_gpus(gpus_per_site: float) -> None:
    """Refuse a GPU share when torch sees no CUDA device (Ray would wait forever)."""
    if gpus_per_site < 0:
        raise ConfigError(f"--gpus-per-site must be >= 0, found {gpus_per_site}")
    if gpus_per_site == 0:
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"--gpus-per-site {gpus_per_site:g} asks for a GPU but torch sees no "
            "CUDA device on this machine; run with --gpus-per-site 0"
        )


def check_run_folder(run_dir: Path, resume: bool) -> None:
    """A fresh run needs an empty or absent folder; ``--resume`` needs a run."""
    holds_run = run_dir.is_dir() and any(run_dir.iterdir())
    if holds_run and not resume:
        raise FileExistsError(
            f"run folder {run_dir} already holds a run: continue it with --resume, "
            f"or remove it (rm -r {run_dir}) or choose another --out"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"--out {run_dir} is a file, not a folder")


def check_data_folder(data_dir: Path, synth: bool) -> bool:
    """Whether synthetic data must be written; refuse a folder that is not there.

    Without ``--synth`` a missing folder is an error: a mistyped path must
    never be filled with generated data. Every ``.npz`` under the folder must
    open as a zip archive, so a truncated file is named once, here.
    """
    if not data_dir.exists():
        if synth:
            return True
        raise FileNotFoundError(
            f"data folder {data_dir} does not exist: check --data-dir, put the "
            "real files there, or pass --synth to write synthetic data into it"
        )
    if not data_dir.is_dir():
        raise NotADirectoryError(f"data folder {data_dir} is a file, not a folder")
    if not any(data_dir.iterdir()):
        if synth:
            return True
        raise FileNotFoundError(
            f"data folder {data_dir} is empty: put the real files there, or pass "
            "--synth to write synthetic data into it"
        )
    for k, path in enumerate(sorted(data_dir.rglob("*.npz"))):
        if k >= NPZ_CHECK_LIMIT:
            break
        check_npz(path)
    return False


def check_npz(path: Path) -> None:
    """Refuse an npz file that is not a readable zip archive (e.g. truncated)."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(
            f"{path} is not a readable npz file ({err}): it is truncated or "
            "corrupt; copy it again from its source"
        ) from None


def preflight(
    config: Mapping[str, Scalar],
    *,
    synth: bool,
    gpus_per_site: float,
) -> tuple[dict[str, Scalar], bool]:
    """The run config to run with, and whether to write synthetic data first.

    Parses the platform keys (``num-server-rounds=abc`` fails here), then
    checks resources, the run folder and the data folder, in that order;
    ``synthetic-data`` is set when the data is (or will be) generated.
    """
    from fedmed.data.sites import is_synthetic
    from fedmed.tasks import list_tasks

    platform = parse_platform(config, list_tasks())
    check_gpus(gpus_per_site)
    check_run_folder(Path(platform.run_dir), platform.resume)
    data_dir = Path(platform.data_dir)
    write_synth = check_data_folder(data_dir, synth)
    checked = dict(config)
    if write_synth or is_synthetic(data_dir):
        checked["synthetic-data"] = True
    return checked, write_synth
