"""Federated methods, declared by name and imported on first use.

A new method is a new folder plus one ``declare_task`` line below.
"""

from fedmed.tasks.base import RoundResult, SiteData, Task
from fedmed.tasks.registry import (
    declare_task,
    get_task,
    list_tasks,
    register_task,
    task_class,
)

# One line per task: its package registers the class when first needed.
declare_task("classify", "fedmed.tasks.classify")
declare_task("fpt", "fedmed.tasks.fpt")
declare_task("samba", "fedmed.tasks.samba")
declare_task("selora", "fedmed.tasks.selora")
declare_task("vfl-clip", "fedmed.tasks.vfl_clip")

__all__ = [
    "RoundResult",
    "SiteData",
    "Task",
    "declare_task",
    "get_task",
    "list_tasks",
    "register_task",
    "task_class",
]
