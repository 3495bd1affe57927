"""Reading a suite: a file or a built-in suite by name, `--set KEY=VALUE` applied over it, validated as a
peftbench.config.Suite, and every mistake in it told in one line that names the key and the fix."""

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from peftbench.config import Budget, FileTask, Schedule, Sharding, Suite, Sweep, Tune
from peftbench.errors import UserError, read_file
from peftbench.registry import did_you_mean
from peftbench.yaml_files import load_yaml


SUITE_BYTES = 1 << 20  # a suite is a page of YAML; the paper suites are under 5 KB


def _told(error: ValidationError) -> dict:
    """The error to tell. A value checked against a union (`epochs`: a count or a mapping by scale) fails once per
    member; the one to tell is where its type matched and a range or a check did not."""
    errors = error.errors()
    return next((first for first in errors if not first["type"].endswith("_type")), errors[0])


def _location(first: dict, data: object) -> str:
    """Where the error is, as the suite writes it: pydantic's location also names the member of a union it tried
    (`epochs.dict[str,constrained-int].low`), which a walk through the data leaves out."""
    if first["type"] == "missing":
        return ".".join(str(part) for part in first["loc"])
    parts, node = [], data
    for part in first["loc"]:
        key = next((key for key in node if str(key) == str(part)), None) if isinstance(node, dict) else \
            part if isinstance(node, list) and isinstance(part, int) and part < len(node) else None
        if key is not None:
            parts.append(str(part))
            node = node[key]
    return ".".join(parts)


def _explain(error: ValidationError, source: str, data: object) -> str:
    first = _told(error)
    where = _location(first, data) or "suite"
    if first["type"] == "extra_forbidden":
        key = str(first["loc"][-1])
        nested = {"schedule": Schedule, "sweep": Sweep, "tune": Tune, "budget": Budget, "sharding": Sharding}
        parent = Suite if len(first["loc"]) == 1 else nested.get(str(first["loc"][0]), FileTask)
        hint = did_you_mean(key, list(parent.model_fields))
        return f"{source}: unknown key '{where}'.{hint} Remove or rename it."
    if first["type"] == "missing":
        return f"{source}: missing required key '{where}'; add it to the suite"
    message = first["msg"].removeprefix("Value error, ")
    return f"{source}: bad value for '{where}': {message}"


@dataclass(frozen=True)
class Setting:
    """One `--set KEY=VALUE`: a suite key (dotted for nested keys: schedule.peak_factor, learning_rates.lora,
    epochs.low) and a value read as YAML, so that it means what it would mean in the suite file."""

    text: str
    path: tuple[str, ...]
    value: object

    @classmethod
    def parse(cls, text: str) -> "Setting":
        key, sep, raw = text.partition("=")
        path = tuple(part.strip() for part in key.split("."))
        if not sep or not all(path):
            raise UserError(f"--set '{text}' must be KEY=VALUE, e.g. --set epochs=3 or --set schedule.peak_factor=5")
        try:
            value = load_yaml(raw) if raw.strip() else None
        except yaml.YAMLError as error:
            raise UserError(f"--set {text}: the value is not valid YAML ({getattr(error, 'problem', None) or error});"
                            " quote it, e.g. --set 'methods=[\"lora[r=8]\"]'") from None
        if value is None:
            raise UserError(f"--set {text}: give a value after '=', e.g. --set {key.strip()}=3")
        return cls(text, path, value)

    def apply(self, data: dict) -> None:
        parent = data
        for depth, key in enumerate(self.path[:-1]):
            child = parent.get(key)
            if child is None:
                child = parent[key] = {}
            if not isinstance(child, dict):
                where = ".".join(self.path[:depth + 1])
                raise UserError(f"--set {self.text}: '{where}' is {json.dumps(child, default=str)}, not a mapping;"
                                f" set it whole, e.g. --set {where}=...")
            parent = child
        parent[self.path[-1]] = self.value


def _source_of(error: ValidationError, path: Path, settings: list[Setting]) -> str:
    """Name the --set that a validation error is about, or else the suite file."""
    loc = tuple(str(part) for part in _told(error)["loc"])
    for setting in reversed(settings):
        shared = min(len(loc), len(setting.path))
        if shared and loc[:shared] == setting.path[:shared]:
            return f"--set {setting.text}"
    return str(path)


def builtin_suites() -> dict[str, Path]:
    folder = resources.files("peftbench") / "suites"
    return {Path(str(entry)).stem: Path(str(entry)) for entry in folder.iterdir() if str(entry).endswith(".yaml")}


def suite_path(name_or_path: str) -> Path:
    """A suite file, or the file of a built-in suite by its name."""
    path = Path(name_or_path)
    if not path.is_file():
        suites = builtin_suites()
        if name_or_path not in suites:
            hint = did_you_mean(name_or_path, list(suites))
            raise UserError(f"no suite file or built-in suite named '{name_or_path}'.{hint}"
                            f" Built-in suites: {', '.join(sorted(suites))}")
        path = suites[name_or_path]
    return path


def load_suite(name_or_path: str, settings: list[str] = ()) -> Suite:
    """Read and validate a suite; `settings` are `--set KEY=VALUE` texts applied over the file first."""
    path = suite_path(name_or_path)
    parsed = [Setting.parse(text) for text in settings]
    try:
        data = load_yaml(read_file(path, "suite file", SUITE_BYTES).decode("utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{where} ({getattr(error, 'problem', None) or error});"
                        " fix the syntax (quote method specs with brackets, e.g. \"lora[r=8]\")") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save the suite as UTF-8") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a suite must be a YAML mapping with keys such as models, tasks, methods")
    data.setdefault("name", path.stem)
    for setting in parsed:
        setting.apply(data)
    try:
        return Suite.model_validate(data)
    except ValidationError as error:
        raise UserError(_explain(error, _source_of(error, path, parsed), data)) from None
