"""Explicit task registry: one name, one class, loud on mistakes."""

from __future__ import annotations

from fedmed.config import FlatConfig
from fedmed.tasks.base import Task

_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator adding ``cls`` under ``cls.name``; duplicates are errors."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} needs a non-empty class attribute 'name'")
    if name in _TASKS:
        raise KeyError(f"task {name!r} already registered by {_TASKS[name].__module__}")
    _TASKS[name] = cls
    return cls


def list_tasks() -> list[str]:
    """Names of every registered task, sorted."""
    return sorted(_TASKS)


def task_class(name: str) -> type[Task]:
    """The class registered as ``name``; the error lists the known names."""
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(list_tasks())}")
    return _TASKS[name]


def get_task(run_config: FlatConfig) -> Task:
    """Build the task named by ``task.name`` from the run config."""
    if "task.name" not in run_config:
        raise KeyError(
            "run config has no 'task.name'; known tasks: " + ", ".join(list_tasks())
        )
    return task_class(str(run_config["task.name"])).from_run_config(run_config)
