"""Communication per round: what every task sends, per exchange mode and codec.

For every registered task and every value of its exchange-mode field
(``classify.mode``, ``fpt.method``, ``selora.method``, ``samba.localizer``)
the task's tiny configuration is built and what ``exchanged`` returns is
encoded exactly as the ClientApp encodes it; the Flower ``ArrayRecord``
payload bytes are counted (upload of one site; the download is the aggregate,
the same keys and shapes). The full-model reference is
``Task.full_model_params`` at the codec's element size. Outside ``--quick``
the paper architectures are sized too, built on the meta device (no memory,
no weights) where the task allows it, else on the CPU with random weights.

The metric cost of each codec is measured on synthetic DermaMNIST with short
in-process FedAvg runs of the tiny classifier (LoRA) whose every download and
upload goes through the codec (``fedmed.bench.loop``).
"""

from __future__ import annotations

import logging
import tomllib
import typing
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from fedmed.bench.loop import federated_loop
from fedmed.bench.results import REPO_ROOT
from fedmed.comm.codecs import CODECS, bytes_per_element
from fedmed.data.synth_dermamnist import synthesize
from fedmed.tasks import Task, get_task, list_tasks
from fedmed.tasks.registry import task_class
from fedmed.wire import state_to_record

log = logging.getLogger(__name__)

#: Config fields whose value changes what leaves a site.
EXCHANGE_FIELDS = ("mode", "method", "localizer")
#: Paper-scale configurations to size: (override TOML, keys to override).
PAPER_SETTINGS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "classify": (None, {"classify.model": "vit_base_patch16_224"}),
    "fpt": ("fpt_isic2018.toml", {}),
    "samba": ("samba_brats2021.toml", {"samba.sam-checkpoint": ""}),
    "vfl-clip": ("vfl_clip_dermamnist.toml", {"vfl-clip.checkpoint": ""}),
    "selora": ("selora_iu_xray.toml", {}),
}


def tiny_config(task_name: str) -> dict[str, Any]:
    """The task's ``configs/<task>_tiny.toml`` run config."""
    path = REPO_ROOT / "configs" / f"{task_name.replace('-', '_')}_tiny.toml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: every task ships a tiny config")
    return tomllib.loads(path.read_text())


def exchange_modes(task_name: str) -> Iterator[tuple[str | None, str]]:
    """``(run-config key, value)`` for every exchange mode of a task."""
    cls = task_class(task_name)
    hints = typing.get_type_hints(cls.config_class)
    found = False
    for f in fields(cls.config_class):
        if (
            f.name in EXCHANGE_FIELDS
            and typing.get_origin(hints[f.name]) is typing.Literal
        ):
            found = True
            for value in typing.get_args(hints[f.name]):
                yield f"{task_name}.{f.name.replace('_', '-')}", value
    if not found:
        yield None, "default"


def exchange_mode_of(task: Task) -> str:
    """The value of the task's exchange-mode field as parsed, else ``default``."""
    found = (getattr(task.cfg, name, None) for name in EXCHANGE_FIELDS)
    return str(next((value for value in found if value is not None), "default"))


def _size_row(task_name, mode, setting, exchanged: dict, full_params, codec) -> dict:
    params = sum(int(t.numel()) for t in exchanged.values())
    if setting == "tiny":
        up = state_to_record(exchanged, codec).count_bytes()
    else:  # meta tensors have no data: payload bytes, Flower's headers excluded
        up = params * bytes_per_element(codec) + (
            4 * len(exchanged) if codec == "int8" else 0
        )
    full = full_params * bytes_per_element(codec)
    return {
        "task": task_name,
        "mode": mode,
        "setting": setting,
        "codec": codec,
        "exchanged_tensors": len(exchanged),
        "exchanged_params": params,
        "full_params": int(full_params),
        "bytes_up_per_round": int(up),
        "bytes_down_per_round": int(up),
        "full_bytes_per_round": int(full),
        "ratio_to_full": up / full,
        "param_ratio_to_full": params / full_params,
    }


def size_tiny(task_name: str) -> list[dict]:
    """Rows for every exchange mode and codec of a task's tiny config."""
    rows = []
    for key, mode in exchange_modes(task_name):
        config = {**tiny_config(task_name), **({key: mode} if key else {})}
        task = get_task(config)
        model = task.build_model()
        exchanged = task.exchanged(model)
        full = task.full_model_params(model)
        rows += [_size_row(task_name, mode, "tiny", exchanged, full, c) for c in CODECS]
    return rows


def size_paper(task_name: str) -> list[dict]:
    """Rows for the paper architecture (meta device, else CPU random weights)."""
    if task_name not in PAPER_SETTINGS:
        return []
    toml, overrides = PAPER_SETTINGS[task_name]
    config = {"task.name": task_name}
    if toml:
        config.update(tomllib.loads((REPO_ROOT / "configs" / toml).read_text()))
    config.update(overrides)
    task = get_task(config)
    mode = exchange_mode_of(task)
    try:
        with torch.device("meta"):
            model = task.build_model()
    except (RuntimeError, NotImplementedError):
        log.info(
            "%s cannot be built on the meta device; building on the CPU", task_name
        )
        model = task.build_model()
    exchanged = {k: v for k, v in task.exchanged(model).items()}
    full = task.full_model_params(model)
    return [_size_row(task_name, mode, "paper", exchanged, full, c) for c in CODECS]


def codec_cost(
    data_dir: Path, sites: int, rounds: int, samples: int
) -> dict[str, list]:
    """Held-out metrics per round of the tiny LoRA classifier under each codec."""
    if not data_dir.exists():
        synthesize(
            data_dir, sites, samples_per_site=samples, seed=1, heldout_samples=300
        )
    config = {**tiny_config("classify"), "data-dir": str(data_dir)}
    return {
        codec: federated_loop(config, sites, rounds, codec=codec).heldout
        for codec in CODECS
    }


def run_comm(quick: bool, work_dir: Path) -> tuple[list[dict], dict]:
    """All rows (sizes + codec cost on the classify LoRA rows) and the detail."""
    rows: list[dict] = []
    pending: dict[str, str] = {}
    for name in list_tasks():
        rows += size_tiny(name)
        if not quick:
            try:
                rows += size_paper(name)
            except FileNotFoundError as err:  # paper backbone needs user weights
                pending[name] = str(err)
    sites, rounds, samples = (3, 2, 100) if quick else (6, 5, 400)
    curves = codec_cost(work_dir / "codec-data", sites, rounds, samples)
    reference = curves["fp32"][-1]
    for row in rows:
        if (row["task"], row["mode"], row["setting"]) == ("classify", "lora", "tiny"):
            final = curves[row["codec"]][-1]
            row["heldout_auc"] = float(final["auc"])
            row["auc_change_vs_fp32"] = float(final["auc"] - reference["auc"])
            row["heldout_loss"] = float(final["loss"])
    detail = {
        "codec_curves": curves,
        "pending_paper_sizes": pending,
        "codec_cost_setup": {
            "sites": sites,
            "rounds": rounds,
            "samples_per_site": samples,
        },
    }
    return rows, detail
