"""One contract test over every registered task: a new task is checked for free."""

import tomllib
from pathlib import Path

import pytest
import torch

from fedmed.comm.selection import UpdateRejected, frozen_names
from fedmed.tasks import get_task, list_tasks

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny_run_config(name: str) -> dict:
    path = CONFIGS / f"{name.replace('-', '_')}_tiny.toml"
    assert path.is_file(), f"task {name!r} must ship {path.name}"
    return tomllib.loads(path.read_text())


@pytest.mark.parametrize("name", list_tasks())
def test_exchanged_round_trips_and_excludes_frozen(name):
    # Prepare
    task = get_task(tiny_run_config(name))
    model = task.build_model()
    sent = task.exchanged(model)
    # Execute
    shifted = {k: v + 0.5 for k, v in sent.items()}
    task.load_exchanged(model, shifted)
    # Assert
    assert sent, "a task must exchange something"
    assert not frozen_names(model) & sent.keys()
    for key, value in task.exchanged(model).items():
        torch.testing.assert_close(value, shifted[key])


@pytest.mark.parametrize("name", list_tasks())
def test_build_model_is_identical_on_every_site(name):
    task = get_task(tiny_run_config(name))
    first, second = (
        task.exchanged(task.build_model()),
        task.exchanged(task.build_model()),
    )
    for key in first:
        torch.testing.assert_close(first[key], second[key])


@pytest.mark.parametrize("name", list_tasks())
def test_load_exchanged_rejects_nan_and_wrong_shape(name):
    task = get_task(tiny_run_config(name))
    model = task.build_model()
    sent = task.exchanged(model)
    key = next(iter(sent))
    before = sent[key].clone()
    with pytest.raises(UpdateRejected):
        task.load_exchanged(
            model, {**sent, key: torch.full_like(sent[key], float("nan"))}
        )
    with pytest.raises(UpdateRejected):
        task.load_exchanged(model, {**sent, key: torch.zeros(*sent[key].shape, 3)})
    torch.testing.assert_close(task.exchanged(model)[key], before)


@pytest.mark.parametrize("name", list_tasks())
def test_writes_artifacts_says_whether_write_artifacts_writes(name, tmp_path):
    # Prepare: runs export only tasks that declare artefacts
    task = get_task(tiny_run_config(name))
    # Execute
    written = task.write_artifacts(task.build_model(), tmp_path / "out")
    # Assert
    assert bool(written) == task.writes_artifacts
    assert all(path.exists() for path in written)
