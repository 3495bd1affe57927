"""The task registry: built-in tasks by name, and `file:PATH` for a user's own data."""

from pathlib import Path

from peftbench.errors import UserError
from peftbench.registry import Registry
from peftbench.tasks.files import file_task
from peftbench.tasks.hub import HUB_TASKS
from peftbench.tasks.offline import OFFLINE_TASKS
from peftbench.tasks.spec import Row, TaskData, TaskSpec

TASKS: Registry[TaskSpec] = Registry("task", "peftbench tasks")
for _spec in OFFLINE_TASKS + HUB_TASKS:
    TASKS.register(_spec.name, _spec)


DATA_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".tsv")


def get_task(name: str, test_path: str | None = None, mapping: dict[str, str] | None = None,
             allow_overlap: bool = False) -> TaskSpec:
    """`mapping`: for a file task, standard column -> the file's column (e.g. {"text": "review"});
    `allow_overlap`: its test file may share inputs with the training file (tasks/files.py)."""
    if name.startswith("file:"):
        return file_task(Path(name.removeprefix("file:")), Path(test_path) if test_path else None, mapping,
                         allow_overlap)
    if name not in TASKS and (name.lower().endswith(DATA_SUFFIXES) or Path(name).is_file()):
        raise UserError(f"unknown task '{name}'; for your own data file write file:{name}"
                        f" (e.g. --task file:{name}), see `peftbench tasks`")
    return TASKS.get(name)


__all__ = ["TASKS", "Row", "TaskData", "TaskSpec", "get_task"]
