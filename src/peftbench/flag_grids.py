"""Grids that `peftbench run` builds from command-line flags over a suite: whether such a grid stays within
its suite (its runs are then filed under the suite's name), the name derived from its axes when it does not,
and the --task file: flags gathered into one file task."""

import re
from pathlib import Path

from peftbench.config import FileTask, MethodSpec, Suite
from peftbench.errors import UserError

AXES = ("models", "tasks", "methods", "scales", "seeds")
NAME_VALUES = 3  # values of one axis spelled out in a derived name; more are counted


def _axis_values(suite: Suite, axis: str) -> list[str]:
    values = getattr(suite, axis)
    if axis == "tasks":
        return [f"file:{value.file}" if isinstance(value, FileTask) else value for value in values]
    return [str(value) for value in values]


def within(suite: Suite, base: Suite) -> bool:
    """True when every axis of `suite` holds only values of `base`'s, so its runs belong to `base`."""
    return all(set(_axis_values(suite, axis)) <= set(_axis_values(base, axis)) for axis in AXES)


def _short(axis: str, value: str) -> str:
    if axis == "models":
        return re.split(r"[:/]", value)[-1]
    if axis == "tasks" and value.startswith("file:"):
        return Path(value.removeprefix("file:")).stem
    if axis == "methods":
        return MethodSpec.parse(value).name
    return value


def derived_name(suite: Suite) -> str:
    """A name for a grid built from flags, from its axes (models.tasks.methods.scales):
    `minilm-l6.reviews.full+lora+ia3.low`."""
    parts = []
    for axis in AXES[:4]:
        values = list(dict.fromkeys(_short(axis, value) for value in _axis_values(suite, axis)))
        shown = values[:NAME_VALUES] + ([f"{len(values) - NAME_VALUES}more"] if len(values) > NAME_VALUES else [])
        parts.append("+".join(shown))
    name = re.sub(r"[^\w.+-]+", "-", ".".join(parts)).strip("-.+") or "grid"
    return name[:128]


def file_task_flags(tasks: list[str] | None, test_file: str | None, fields: dict[str, str | None],
                    allow_overlap: bool = False) -> list | None:
    """--task values, with --test-file, --allow-overlap and the column flags (--text-field ...) attached to the
    one `file:` task they describe, as a suite's `{file: ..., test: ..., text_field: ...}` entry."""
    mapping = {f"{name}_field": value for name, value in fields.items() if value}
    if allow_overlap and not test_file:
        raise UserError("--allow-overlap lets a --test-file share inputs with the training file: add --test-file"
                        " PATH, or drop --allow-overlap")
    if not (test_file or mapping):
        return tasks
    flags = ", ".join(["--test-file"] * bool(test_file) + ["--allow-overlap"] * allow_overlap
                      + [f"--{key.replace('_', '-')}" for key in mapping])
    files = [task for task in tasks or [] if task.startswith("file:")]
    if not files:
        raise UserError(f"{flags} describe a data file: add --task file:PATH (e.g. --task file:reviews.jsonl)")
    if len(files) > 1:
        raise UserError(f"{flags} apply to one --task file:PATH, and {len(files)} are given; describe each file in"
                        " a suite instead: tasks: [{file: a.jsonl, test: a-test.jsonl, text_field: review}]")
    return [{"file": task.removeprefix("file:"), **({"test": test_file} if test_file else {}),
             **({"allow_overlap": True} if allow_overlap else {}), **mapping}
            if task.startswith("file:") else task for task in tasks]


def check_name(name: str, flag: str = "--name") -> str:
    try:
        return Suite._file_name(name)
    except ValueError as error:
        raise UserError(f"{flag}: {error}") from None
