"""A grid's inputs before anything heavy loads: the suite with the command line's overrides applied, and every
method, option and task name in it checked against the catalogues (peftbench.methods.catalog, the task
registry), so that a typo is refused in a fraction of a second rather than after torch and PEFT have loaded
(planning.plan checks again, for callers that plan directly). A file task's rows are read, and checked, by plan."""

from dataclasses import dataclass

from pydantic import ValidationError

from peftbench.config import FileTask, MethodSpec, Suite
from peftbench.errors import UserError
from peftbench.methods.catalog import check_spec
from peftbench.tasks import get_task


@dataclass(frozen=True)
class Overrides:
    models: list[str] | None = None
    tasks: list[str] | None = None
    methods: list[str] | None = None
    scales: list[str] | None = None
    seeds: list[int] | None = None


def apply_overrides(suite: Suite, overrides: Overrides) -> Suite:
    changes = {}
    for axis in ("models", "tasks", "methods", "seeds"):
        if getattr(overrides, axis):
            changes[axis] = getattr(overrides, axis)
    if "methods" in changes:  # replacements of methods no longer in the grid have nothing to replace
        kept = {str(MethodSpec.parse(text)) for text in changes["methods"]}
        changes["method_overrides"] = {model: {old: new for old, new in replace.items() if old in kept}
                                       for model, replace in suite.method_overrides.items()}
    if suite.sweep and overrides.seeds:  # a sweep owns the seeds: the first sweeps, the others follow
        changes["sweep"] = {**suite.sweep.model_dump(), "then_seeds": changes.pop("seeds")}
    if overrides.scales:
        # ASCII digits only: str.isdigit() is also true of '²', which int() refuses
        changes["scales"] = [int(s) if s.isascii() and s.isdigit() else s for s in overrides.scales]
    try:
        current = suite.model_dump(exclude={"seeds"} if "sweep" in changes else set())
        return Suite.model_validate({**current, **changes})
    except ValidationError as error:
        first = error.errors()[0]
        raise UserError(f"bad override for {first['loc'][0]}: {first['msg'].removeprefix('Value error, ')}") from None


def checked(suite: Suite, overrides: Overrides) -> Suite:
    """The suite with `overrides` applied, its method specs and named tasks known (one line for the first that
    is not)."""
    suite = apply_overrides(suite, overrides)
    for model in suite.models:
        for spec in suite.method_specs(model):
            check_spec(spec)
    for task in suite.tasks:
        if not isinstance(task, FileTask) and not task.startswith("file:"):
            get_task(task)
    return suite
