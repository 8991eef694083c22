"""Explicit task registry: one name, one class, loud on mistakes.

Tasks are *declared* by name and package path and imported on first use:
each method pulls in a different heavy stack (diffusers, segment_anything,
open_clip, ...), and a ClientApp running ``classify`` should not pay seconds
of imports for the other four.
"""

from __future__ import annotations

import importlib
import logging
import time

from fedmed.config import FlatConfig
from fedmed.tasks.base import Task

logger = logging.getLogger(__name__)

_TASKS: dict[str, type[Task]] = {}
_DECLARED: dict[str, str] = {}


def declare_task(name: str, package: str) -> None:
    """Announce that importing ``package`` registers the task ``name``."""
    _DECLARED[name] = package


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
    """Names of every declared or registered task, sorted (imports nothing)."""
    return sorted(set(_TASKS) | set(_DECLARED))


def task_class(name: str) -> type[Task]:
    """The class registered as ``name``; the error lists the known names."""
    if name not in _TASKS and name in _DECLARED:
        _import_task_package(_DECLARED[name])
        if name not in _TASKS:
            raise ImportError(
                f"importing {_DECLARED[name]} did not register task {name!r}"
            )
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


def _import_task_package(package: str, attempts: int = 3) -> None:
    """Import a task's package, retrying an import that met a half-made module.

    Flower's simulation starts the ServerApp thread while its main thread is
    still importing the ClientApp (open_clip, hence transformers); transformers'
    lazy module is not thread-safe, so ``from transformers import AutoModel``
    in the other thread can fail once with an ImportError. The failed modules
    leave ``sys.modules``; a retry after the other import finished succeeds.
    A genuinely missing package fails every attempt and its error is raised.
    """
    for attempt in range(1, attempts + 1):
        try:
            importlib.import_module(package)
            return
        except ImportError as err:
            if attempt == attempts:
                raise
            logger.warning(
                "importing %s failed (%s); retrying in case another thread was "
                "importing the same libraries",
                package,
                err,
            )
            time.sleep(1.0)
