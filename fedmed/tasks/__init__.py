"""Federated methods. Importing this package registers every task.

A new method is a new folder plus one import line below.
"""

from fedmed.tasks.base import RoundResult, SiteData, Task
from fedmed.tasks.registry import get_task, list_tasks, register_task, task_class

# Each task package registers itself on import; one line per task.
from fedmed.tasks import classify  # noqa: E402,F401
from fedmed.tasks import fpt  # noqa: E402,F401
from fedmed.tasks import samba  # noqa: E402,F401
from fedmed.tasks import selora  # noqa: E402,F401
from fedmed.tasks import vfl_clip  # noqa: E402,F401

__all__ = [
    "RoundResult",
    "SiteData",
    "Task",
    "get_task",
    "list_tasks",
    "register_task",
    "task_class",
]
