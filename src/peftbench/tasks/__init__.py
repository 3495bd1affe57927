"""The task registry: built-in tasks by name, and `file:PATH` for a user's own data."""

from pathlib import Path

from peftbench.registry import Registry
from peftbench.tasks.files import file_task
from peftbench.tasks.hub import HUB_TASKS
from peftbench.tasks.offline import OFFLINE_TASKS
from peftbench.tasks.spec import Row, TaskData, TaskSpec

TASKS: Registry[TaskSpec] = Registry("task", "peftbench tasks")
for _spec in OFFLINE_TASKS + HUB_TASKS:
    TASKS.register(_spec.name, _spec)


def get_task(name: str, test_path: str | None = None) -> TaskSpec:
    if name.startswith("file:"):
        return file_task(Path(name.removeprefix("file:")), Path(test_path) if test_path else None)
    return TASKS.get(name)


__all__ = ["TASKS", "Row", "TaskData", "TaskSpec", "get_task"]
