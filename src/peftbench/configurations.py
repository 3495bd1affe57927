"""Stored runs grouped into configurations: a method on a model, task and data size, over its seeds. The
report's tables, plots and summary and `recommend`'s ranking are all computed from these, and so is each
trained configuration's verdict on whether it learned anything (peftbench.learning)."""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from peftbench.identity import SEED_KEY, configuration_key
from peftbench.learning import Learning, judge
from peftbench.stats import METRIC_RANGES, Summary, summarise
from peftbench.sweep import final_rows
from peftbench.tuning.studies import roles
from peftbench.tuning.studies import final_rows as tuned_rows

RANDOM_WEIGHTS = ("Random-weight model (config:): its scores exercise the pipeline and say nothing about the"
                  " methods, so no significance is claimed for it.")


def random_weights(model: str) -> bool:
    """`config:` models are architectures with random weights (peftbench.models)."""
    return str(model).startswith("config:")


@dataclass
class Config:
    """One configuration (model, task, data size, method spec, hyper-parameters) and its finished seeds."""

    model: str
    task: str
    scale: object
    n_train: int
    method_spec: str
    kind: str
    runs: list[dict]
    label: str = ""
    tuning: str | None = None  # of a tuning study: default, tuned, or `default = tuned` (peftbench.tuning)
    # The baselines run on the same model, task and data size (configs() fills it): what it must beat.
    baselines: list["Config"] = field(default_factory=list, compare=False, repr=False)

    @property
    def seeds(self) -> int:
        return len(self.runs)

    @property
    def metric(self) -> str | None:
        return self.first("primary_metric")

    @property
    def random_weights(self) -> bool:
        return random_weights(self.model)

    @property
    def is_reference(self) -> bool:
        """Its method is the yardstick of relative measurements (full tuning), as its runs recorded."""
        return bool(self.first("is_reference"))

    def summary(self, value: Callable[[dict], float | None], bounds: tuple[float, float] | None = None) -> Summary | None:
        return summarise([value(run) for run in self.runs], bounds)

    def score(self) -> Summary | None:
        """The primary metric over seeds, its interval clipped to the metric's range."""
        return self.summary(score, METRIC_RANGES.get(self.metric))

    def first(self, key: str):
        return next((run[key] for run in self.runs if run.get(key) is not None), None)

    @property
    def test_digest(self) -> str | None:
        """Which test rows its runs were scored on (the first run's; per_row checks that they agree)."""
        return (self.runs[0].get("data_digest") or {}).get("test")

    def per_row(self) -> list[float] | None:
        """Per-test-row score averaged over the seeds (0/1 correct, or ROUGE-L); None if a run lacks it or
        the runs were not tested on the same rows (their data digests differ)."""
        records = [run.get("metrics", {}).get("per_example") for run in self.runs]
        digests = {(run.get("data_digest") or {}).get("test") for run in self.runs}
        if any(record is None for record in records) or len(digests) != 1 or len({len(r) for r in records}) != 1:
            return None
        return [sum(values) / len(values) for values in zip(*records)]

    @cached_property
    def learning(self) -> Learning | None:
        """Whether it learned: significantly above the best of its baselines (peftbench.learning.judge). None
        for a baseline, which is the yardstick itself."""
        return judge(self) if self.kind == "train" else None

    def lr_text(self) -> str | None:
        """`3e-05 → peak 3e-04`: the starting LR and where warm-up takes it (train.lr_factor)."""
        lr, peak = self.first("lr"), self.first("peak_factor")
        if lr is None:
            return None
        return f"{fmt_lr(lr)} → peak {fmt_lr(lr * peak)}" if peak not in (None, 1) else f"{fmt_lr(lr)} (no warm-up peak)"


def score(run: dict) -> float | None:
    return run.get("score")


# Spec fields computed from the others (a sweep group's id hashes the group's spec), never worth a label.
DERIVED_FIELDS = ("sweep.group",)


def _flat(spec: dict, prefix: str = "") -> dict[str, object]:
    """A spec's fields with nested ones dotted (budget.usd, method_options.r), for naming what differs."""
    flat = {}
    for key, value in spec.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def configs(rows: list[dict]) -> list[Config]:
    """Finished runs grouped over seeds, in the order they were first stored (baselines first, then the reference),
    each trained configuration holding the baselines of its model, task and data size. Runs are seeds of one
    configuration when their specs are equal but for the seed (identity.configuration_key): a difference in any
    other field, of a budget or a precision switch as much as of a hyper-parameter, keeps them apart. A method spec that appears in several configurations for the same model, task and data size
    gets what differs in its label, e.g. `lora (lr=0.001, peak 0.01)`. Of a tuning study only its defaults and its
    best trial are configurations (peftbench.tuning.studies), named `lora (default)` and `lora (tuned)`."""
    groups: dict[tuple, Config] = {}
    finished = [row for row in rows if row.get("status") == "finished"]
    role = roles(finished)
    for row in tuned_rows(final_rows(finished)):
        key = (row["kind"], configuration_key(row["spec"]))
        if key not in groups:
            groups[key] = Config(row["model"], row["task"], row["scale"], row["n_train"], row["method_spec"],
                                 row["kind"], [], tuning=role.get(row["run_id"]))
        groups[key].runs.append(row)
    baselines: dict[tuple, list[Config]] = {}
    for config in groups.values():
        if config.kind == "baseline":
            baselines.setdefault((config.model, config.task, config.n_train), []).append(config)
    for config in groups.values():
        if config.kind == "train":
            config.baselines = baselines.get((config.model, config.task, config.n_train), [])
    siblings: dict[tuple, list[Config]] = {}
    for config in groups.values():
        if config.tuning:  # a study's configuration is named by its role: `lora (tuned)`, `lora (default)`
            config.label = f"{config.first('tune')['method_spec']} ({config.tuning})"
            continue
        siblings.setdefault((config.model, config.task, config.n_train, config.method_spec, config.kind),
                            []).append(config)
    for family in siblings.values():
        specs = [_flat(config.runs[0]["spec"]) for config in family]
        names = sorted({name for spec in specs for name in spec} - {SEED_KEY, *DERIVED_FIELDS})
        differing = [name for name in names if len({str(spec.get(name)) for spec in specs}) > 1]
        for config, spec in zip(family, specs):
            parts = [f"{name}={spec.get(name)}" for name in differing]
            if "lr" in differing and spec.get("peak_factor") not in (None, 1):
                parts[differing.index("lr")] += f", peak {fmt_lr(spec['lr'] * spec['peak_factor'])}"
            config.label = f"{config.method_spec} ({', '.join(parts)})" if parts else config.method_spec
    ordered = list(groups.values())
    ordered.sort(key=lambda c: (c.kind != "baseline", not c.is_reference))  # stable: storage order otherwise
    return ordered


def at_tuned_settings(items: list[Config]) -> tuple[list[Config], list[str]]:
    """What a ranking compares: in a block (model x task x data size) where `peftbench tune` tuned a method, its
    tuned configuration stands for it, and its defaults and any untuned configuration of the same method spec are
    left out; elsewhere every configuration as it is. The note says which methods were taken at their tuned
    setting, and where."""
    tuned = {(c.model, c.task, c.n_train, c.first("tune")["method_spec"]) for c in items
             if c.tuning in ("tuned", "default = tuned")}
    kept = [c for c in items if c.tuning in ("tuned", "default = tuned") or
            (c.model, c.task, c.n_train, c.first("tune")["method_spec"] if c.tuning else c.method_spec) not in tuned]
    if not tuned:
        return kept, []
    where: dict[str, list[str]] = {}
    for model, task, n_train, method in sorted(tuned):
        where.setdefault(f"{model} / {task} / n={n_train}", []).append(method)
    return kept, ["Tuned methods are compared at their tuned settings (`peftbench tune`: the same trials for each,"
                  " chosen on validation): " + "; ".join(f"{', '.join(methods)} on {block}"
                                                         for block, methods in where.items())
                  + ". Their defaults are in the report's tuned-against-default tables."]


def learning_of_runs(rows: list[dict]) -> dict[str, dict]:
    """Run id -> its configuration's verdict (Learning.as_dict), for every finished training run of `rows`
    (which should hold its baselines): what `results --json` and `run --json` add to each run."""
    return {run["run_id"]: config.learning.as_dict() for config in configs(rows) if config.learning
            for run in config.runs}


def labels(items: list[Config]) -> list[str]:
    return list(dict.fromkeys(config.label for config in items))


def fmt_lr(value: float) -> str:
    """A learning rate as people write it: 3e-4, 1e-3, 0.5."""
    if value == 0 or 1e-2 <= abs(value) < 1e3:
        return f"{value:g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
