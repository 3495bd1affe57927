"""Planning a grid: a suite (with any command-line overrides) expanded into its runs, every input checked
before anything is written: names resolved, data read, scales checked, methods fitted to each architecture.
Each run is a typed RunSpec (peftbench.runspec) whose canonical dump is the spec its id hashes
(peftbench.identity). Runs that depend on others wait in stages (an LR sweep's other seeds; a tuning study's
trials, peftbench.tuning), which the runner asks for more as runs end.

What a grid does with each method on each model x task x scale is a strategy: train it at its learning rate on
every seed (`fixed_lr`), sweep the learning rate first (`lr_sweep`, when the suite has a sweep), or tune it
(peftbench.tuning.plan, for `peftbench tune`)."""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from peftbench import forgetting
from peftbench.accounting import count, learned_positions
from peftbench.artifacts import SavePolicy
from peftbench.baselines import BASELINES, Baseline
from peftbench.config import ALL, NAMED_SCALES, MethodSpec, Suite
from peftbench.data import Splits, make_splits
from peftbench.errors import UserError
from peftbench.grid_inputs import Overrides, checked
from peftbench.identity import spec_hash
from peftbench.methods import METHODS
from peftbench.methods.base import Method
from peftbench.models import model_family, resolve
from peftbench.prices import usd_per_hour
from peftbench.registry import did_you_mean
from peftbench.runspec import DataPart, EvalPart, MethodPart, ModelPart, RunSpec, TrainPart
from peftbench.sharding import refuse_unshardable
from peftbench.sweep import select_lr
from peftbench.tasks import TaskSpec, get_task
from peftbench.tuning.studies import TrialContext, tune_part


@dataclass
class Run:
    """One grid point. `spec` is the normalised, JSON-able description whose hash is the run id."""

    spec: dict
    kind: str  # train | baseline
    save: SavePolicy = "auto"  # what the run keeps beside the store (peftbench.artifacts); not in its id
    trial: TrialContext | None = None  # a tuning trial: what its pruner needs (peftbench.tuning); not in its id

    @property
    def run_id(self) -> str:
        return spec_hash(self.spec)

    @property
    def procedure(self) -> Method | Baseline:
        """The method it trains, or the baseline it evaluates."""
        return BASELINES.get(self.spec["method"]) if self.kind == "baseline" else METHODS.get(self.spec["method"])

    @property
    def label(self) -> str:
        spec = self.spec
        trial = f" · trial {part['trial']}" if (part := tune_part(spec)) and spec["seed"] == part["trial_seed"] else ""
        return (f"{spec['model']} · {spec['task']} · {spec['method_spec']} · n={spec['n_train']} · seed {spec['seed']}"
                + trial)


class Stage(Protocol):
    """Runs that wait for others: `next_runs(rows)` gives those the stored rows now allow (the runner asks again
    after they end, until none are new); `waiting()` the specs of every run it may add, each with its `seed` and
    `after` (what it waits for), for dry runs and estimates; `remaining(rows)` how many of them are not stored yet,
    at most (the progress display's total)."""

    def next_runs(self, rows: list[dict]) -> list[Run]: ...

    def waiting(self) -> list[dict]: ...

    def remaining(self, rows: list[dict]) -> int: ...


@dataclass
class FollowUp:
    """The seeds of a sweep group still to run once its sweep has chosen an LR: `template` is their spec
    without lr and seed."""

    template: dict
    sweep: dict

    save: SavePolicy = "auto"

    def next_runs(self, rows: list[dict]) -> list[Run]:
        """The other seeds at the LR the group's stored sweep runs choose; none until it can be chosen, or when
        every LR failed."""
        chosen = select_lr([row for row in rows if (row.get("sweep") or {}).get("group") == self.sweep["group"]],
                           self.sweep)
        return [] if chosen is None else self.runs(chosen)

    def runs(self, lr: float) -> list[Run]:
        return [Run({**self.template, "lr": lr, "seed": seed}, kind="train", save=self.save)
                for seed in self.sweep["seeds"][1:]]

    def waiting(self) -> list[dict]:
        return [{**self.template, "seed": seed, "after": "sweep"} for seed in self.sweep["seeds"][1:]]

    def remaining(self, rows: list[dict]) -> int:
        stored = {row["seed"] for row in rows if row.get("status") == "finished"
                  and (row.get("sweep") or {}).get("group") == self.sweep["group"]}
        return len(set(self.sweep["seeds"][1:]) - stored)


@dataclass
class Plan:
    suite: Suite
    runs: list[Run]
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    splits: dict[str, Splits] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)
    usd_per_hour: float | None = None  # the machine's price, for every run's cost

    @property
    def size(self) -> int:
        """Runs in all, counting those that wait in stages."""
        return len(self.runs) + sum(len(stage.waiting()) for stage in self.stages)


def _budget(suite: Suite) -> dict | None:
    """The per-run budget as a training-time cap: dollars at the machine's price per hour."""
    if not suite.budget:
        return None
    price = suite.budget.gpu_usd_per_hour or usd_per_hour(suite.budget.gpu or suite.price)
    return {"usd": suite.budget.usd, "usd_per_hour": price, "seconds": suite.budget.usd / price * 3600}


def _nominal_size(suite: Suite, scale: str | int) -> int | None:
    """Training examples of a scale before the data is read (a dry run of hub tasks): at most this many."""
    return None if scale == ALL else NAMED_SCALES.get(scale, scale) if isinstance(scale, str) else scale


def check_positions(model_name: str, family: str, spec: MethodSpec, method, options, suite: Suite) -> None:
    """Inputs (plus a decoder's target, plus a method's virtual tokens) must fit a model's learned positions,
    or every run of the method would fail mid-grid with an index error."""
    limit = learned_positions(model_name)
    if limit is None:
        return
    virtual = method.virtual_tokens(options) if method.virtual_tokens else 0
    target = suite.max_target_length if family == "decoder" else 0
    if suite.max_input_length + target + virtual > limit:
        parts = [f"max_input_length {suite.max_input_length}"] + ([f"max_target_length {target}"] if target else []) \
            + ([f"{virtual} virtual tokens of '{spec}'"] if virtual else [])
        raise UserError(f"{' + '.join(parts)} = {suite.max_input_length + target + virtual} positions, but {model_name}"
                        f" has {limit}; lower max_input_length" + (" or the method's tokens" if virtual else ""))


def _canonical_methods(suite: Suite, model: str) -> tuple[list[tuple[MethodSpec, Method]], dict[str, list[str]]]:
    """The methods run on one model in their canonical spelling (Method.canonical), each once, and the
    spellings the suite wrote for each (a `learning_rates` key may use any of them)."""
    written: dict[str, list[str]] = {}
    methods = []
    for spec in suite.method_specs(model):
        method = METHODS.get(spec.name)
        canonical = method.canonical(spec)
        if str(canonical) not in written:
            methods.append((canonical, method))
        written.setdefault(str(canonical), []).append(str(spec))
    return methods, written


def method_keys(spec: MethodSpec, written: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The keys that name a method in the suite's mappings by method (learning_rates, tune.space), the most
    specific first: the spellings the suite wrote for it, its canonical spelling, its name."""
    return (*written, str(spec), spec.name)


def _keys_naming(text: str) -> set[str]:
    """Every key by which a suite's mapping by method may name the method spec `text`: the spelling, the name, and
    the canonical spelling (method_keys) where the method and its options are known."""
    spec = MethodSpec.parse(text)
    keys = {str(spec), spec.name}
    if spec.name in METHODS:
        with contextlib.suppress(UserError):  # a bad spec left out of the grid by --method is not this check's
            keys.add(str(METHODS.get(spec.name).canonical(spec)))
    return keys


def refuse_unknown_keys(original: Suite, suite: Suite) -> None:
    """A key of a mapping by method or by model that names nothing is never read: a misspelt `learning_rates` key
    would train at the default learning rate. Each is refused, with the closest name. A method key may name a
    method of the suite as written (`original`) that --method left out of the grid (`suite`); a model key of
    method_overrides any model a name can mean, since --model brings in models the suite does not list (the
    hub checkpoints beside lialin2024's config: shapes)."""
    methods = sorted(set().union(*(_keys_naming(text) for source in (original, suite) for model in source.models
                                   for text in source.methods_for(model))))
    for where, mapping in (("learning_rates", suite.learning_rates), ("tune.space", suite.tune.space if suite.tune
                                                                      else {})):
        for key in mapping:
            if key not in methods:
                raise UserError(f"{where}: '{key}' names no method of the suite.{did_you_mean(key, methods)} Key it"
                                f" by one of: {', '.join(methods)}")
    for model in original.method_overrides:
        try:
            resolve(model)
        except UserError as error:
            raise UserError(f"method_overrides: {error}") from None


@dataclass(frozen=True)
class MethodPoint:
    """One method on one model x task x scale, before its learning rate and seeds are chosen: `template` is its
    spec without them, `lr` its default starting learning rate (the suite's `learning_rates` entry under any of
    the spellings it wrote, else the method's), `written` those spellings."""

    template: RunSpec
    method: Method
    written: tuple[str, ...]
    lr: float
    family: str

    @property
    def keys(self) -> tuple[str, ...]:
        return method_keys(MethodSpec.parse(self.template.method.spec), self.written)


Strategy = Callable[[Suite, MethodPoint], tuple[list[Run], list[Stage]]]


def fixed_lr(suite: Suite, point: MethodPoint) -> tuple[list[Run], list[Stage]]:
    """The method at its learning rate on every seed of the suite."""
    return [Run(point.template.at(point.lr, seed).dump(), kind="train", save=suite.save) for seed in suite.seeds], []


def lr_sweep(suite: Suite, point: MethodPoint) -> tuple[list[Run], list[Stage]]:
    """Lialin et al. 11.1: every LR of the suite's sweep on the first seed; the other seeds wait for the choice."""
    template, train = point.template, point.template.train
    sweep = {"lrs": suite.sweep.lr, "select_by": suite.sweep.select_by, "seeds": suite.seeds}
    group = replace(template, train=replace(train, sweep=sweep)).run_id
    template = replace(template, train=replace(train, sweep={**sweep, "group": group}))
    runs = [Run(template.at(lr, suite.seeds[0]).dump(), kind="train", save=suite.save) for lr in suite.sweep.lr]
    return runs, [FollowUp(template.dump(), template.train.sweep, suite.save)] if len(suite.seeds) > 1 else []


def suite_strategy(suite: Suite, point: MethodPoint) -> tuple[list[Run], list[Stage]]:
    """What `peftbench run` does with each method: sweep its learning rate if the suite says so, else train it."""
    return lr_sweep(suite, point) if suite.sweep else fixed_lr(suite, point)


def plan(suite: Suite, overrides: Overrides = Overrides(), load_data: bool = True,
         strategy: Strategy = suite_strategy) -> Plan:
    """Expand and validate the whole grid: every name resolved, every file read, every scale checked.
    Every task's data is loaded here, before anything is stored: run ids hold each task's training size and
    the splits it draws, and a dataset that cannot be loaded is a user error (one line naming it) rather
    than a grid that runs without it. With `load_data` False (a dry run) hub datasets are not downloaded:
    their runs show the scale's nominal size, and their ids are not final. `strategy` turns each method on
    each model x task x scale into runs and stages."""
    original, suite = suite, checked(suite, overrides)
    refuse_unknown_keys(original, suite)
    families = {name: model_family(resolve(name)) for name in suite.models}
    if any(map(forgetting.applies, families.values())):
        forgetting.general_text()  # a missing corpus package stops the grid here, before anything is stored
    by_model = {name: _canonical_methods(suite, name) for name in suite.models}
    options = {str(spec): method.parse_options(spec) for methods, _ in by_model.values() for spec, method in methods}
    for model_name, (methods, _) in by_model.items():
        for spec, method in methods:
            count(model_name, str(spec))  # a method that does not fit the architecture fails here, not mid-grid
            check_positions(model_name, families[model_name], spec, method, options[str(spec)], suite)
            if suite.sharding:
                refuse_unshardable(str(spec), method)
    budget = _budget(suite)
    price = usd_per_hour(suite.price) if suite.price is not None else budget["usd_per_hour"] if budget else None
    result = Plan(suite=suite, runs=[], usd_per_hour=price)
    for task_ref in suite.tasks:
        name, test_path, mapping, allow_overlap = (task_ref, None, None, False) if isinstance(task_ref, str) else \
            (f"file:{task_ref.file}", task_ref.test, task_ref.columns(), task_ref.allow_overlap)
        task = get_task(name, test_path, mapping, allow_overlap)
        splits = None
        if load_data or not task.source.startswith("hub:"):
            splits = make_splits(task, task.load(), suite.split_seed, suite.val_cap, suite.test_cap)
            result.tasks[name], result.splits[name] = task, splits
        if task.kind == "generation" and set(families.values()) == {"encoder"}:
            raise UserError(f"task '{name}' is generation but the suite's models are encoders;"
                            " use a decoder or encoder-decoder model for it")
        for model_name, family in families.items():
            if family == "encoder" and task.kind == "generation":
                continue  # another model of the suite generates for this task; an encoder cannot
            for scale in suite.scales:
                n_train = suite.training_size(scale, len(splits.train), name) if splits else _nominal_size(suite, scale)
                model = ModelPart(model_name, suite.weights_dtype, suite.bf16_autocast, suite.cpu_bf16)
                data = DataPart(name, task.source, scale, n_train, suite.split_seed, suite.val_cap, suite.test_cap,
                                suite.max_input_length, suite.max_target_length, suite.group_by_length)
                evaluation = EvalPart(suite.eval, suite.merge_for_eval)
                for baseline in map(BASELINES.get, suite.baselines):
                    if baseline.applies(task.kind, family):
                        untrained = RunSpec(model, data, MethodPart(baseline.name, baseline.name, None), evaluation,
                                            seed=suite.seeds[0])
                        result.runs.append(Run(untrained.dump(), kind="baseline"))
                methods, written = by_model[model_name]
                for spec, method in methods:
                    schedule = suite.schedule
                    train = TrainPart(
                        lr=None, peak_factor=schedule.peak_factor or method.peak_factor,
                        final_factor=schedule.final_factor if schedule.final_factor is not None else method.final_factor,
                        warmup_ratio=schedule.warmup_ratio, epochs=suite.epochs_for(scale, n_train or 0),
                        batch_size=suite.batch_size, grad_accum=suite.grad_accum, patience=suite.patience,
                        max_minutes=suite.max_minutes, weight_decay=suite.weight_decay,
                        max_grad_norm=suite.max_grad_norm, fused_adamw=suite.fused_adamw, budget=budget,
                        gradient_checkpointing=suite.gradient_checkpointing,
                        sharding=suite.sharding.model_dump() if suite.sharding else None)
                    template = RunSpec(model, data, MethodPart(spec.name, str(spec), options[str(spec)]), evaluation,
                                       seed=None, train=train)
                    lr = next((suite.learning_rates[key] for key in method_keys(spec, written[str(spec)])
                               if key in suite.learning_rates), method.default_lr)
                    runs, stages = strategy(suite, MethodPoint(template, method, tuple(written[str(spec)]), lr, family))
                    result.runs += runs
                    result.stages += stages
    return result
