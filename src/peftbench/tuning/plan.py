"""A tuning study as the runner sees it: a planning stage (peftbench.planning.Stage) that, from the stored rows,
says which trials to run next and, once its trials have ended, which runs take its two configurations (the
defaults, trial 0, and the best trial) to every other seed of the suite.

Every method of a block gets the same study: `trials` trials on the suite's first seed with the same epoch cap,
trial 0 at the defaults (what `peftbench run` trains), the others proposed by the seeded sampler from the trials
before them (peftbench.tuning.search). Trials are asked `batch` at a time; the next batch once the last has ended.
A trial that ended, finished or failed, keeps its place: it is never run again, so the trials after it stay the
same; one killed while running is run again with the same hyper-parameters."""

from dataclasses import dataclass, replace
from functools import cached_property

from peftbench.accounting import count
from peftbench.config import MethodSpec, Suite, Tune
from peftbench.errors import UserError
from peftbench.identity import spec_hash
from peftbench.planning import MethodPoint, Run, Stage, check_positions
from peftbench.runspec import MethodPart, RunSpec
from peftbench.tuning.search import propose
from peftbench.tuning.space import LR, Axis, override_axis, search_space
from peftbench.tuning.studies import TUNE_KEY, HistoryTrial, TrialContext, studies


@dataclass
class StudyStage:
    """One method's study on one model x task x scale. `template` is its run at the defaults without a seed."""

    template: RunSpec
    point: MethodPoint
    space: dict[str, Axis]
    tune: Tune
    seeds: list[int]  # the suite's: trials run on the first, the chosen configurations on all
    save: str

    @cached_property
    def settings(self) -> dict:
        """The study as each of its runs records it (`tune`, less the trial's number and parameters); its id
        hashes the template and these settings, so a change to either is another study. The number of trials and
        the other seeds are not part of it: asking for more trials or seeds later extends the same study."""
        tune = self.tune
        settings = {"trial_seed": self.seeds[0], "method_spec": self.template.method.spec,
                    "select_by": tune.select_by,
                    "sampler": {"name": "tpe", "seed": tune.seed, "startup_trials": tune.startup_trials,
                                "batch": tune.batch},
                    "pruner": {"name": "successive_halving", "reduction_factor": tune.reduction_factor,
                               "min_epochs": tune.min_epochs} if tune.prune else {"name": "none"},
                    "space": {name: axis.describe() for name, axis in self.space.items()}}
        return {"study": spec_hash({"template": self.template.dump(), **settings}), **settings}

    @property
    def defaults(self) -> dict:
        """Trial 0: the run's default learning rate and the method's options as the suite wrote them."""
        options = self.template.method.options
        return {name: self.point.lr if name == LR else getattr(options, name) for name in self.space}

    def spec(self, number: int, params: dict) -> RunSpec:
        """Trial `number`'s spec (without a seed): the template with the trial's learning rate and options."""
        method = self.point.method
        written = MethodSpec.parse(self.template.method.spec)
        chosen = {name: str(value).lower() if isinstance(value, bool) else str(value)
                  for name, value in params.items() if name != LR}
        canonical = method.canonical(MethodSpec(name=method.name, options={**written.options, **chosen}))
        tune = {**self.settings, "trial": number, "params": params}
        return replace(self.template, method=MethodPart(method.name, str(canonical), method.parse_options(canonical)),
                       train=replace(self.template.train, lr=params[LR], tune=tune))

    def _run(self, number: int, params: dict, seed: int, history: tuple[HistoryTrial, ...] | None) -> Run:
        spec = replace(self.spec(number, params), seed=seed)
        context = None if history is None else TrialContext(self.settings, history)
        return Run(spec.dump(), kind="train", save=self.save, trial=context)

    def next_runs(self, rows: list[dict]) -> list[Run]:
        """The trials of the first batch that has not ended, asked from the batches before it; once all
        `trials` have ended, the defaults' and the best trial's runs on the other seeds."""
        study = next((s for s in studies(rows) if s.id == self.settings["study"]), None)
        trials = study.trials if study else {}
        history: list[HistoryTrial] = []
        for start in range(0, self.tune.trials, self.tune.batch):
            batch = range(start, min(start + self.tune.batch, self.tune.trials))
            if all(number in trials and trials[number].ended for number in batch):
                history += [trials[number].history(self.tune.select_by) for number in batch]
                continue
            asked = tuple(history)
            return [self._run(number, self.defaults if number == 0 else propose(self.settings, history, number),
                              self.seeds[0], asked)
                    for number in batch if not (number in trials and trials[number].ended)]
        chosen = [trial for trial in (study.default(), study.best()) if trial is not None]
        unique = {trial.number: trial for trial in chosen}.values()
        return [self._run(trial.number, trial.params, seed, None) for trial in unique for seed in self.seeds[1:]]

    def remaining(self, rows: list[dict]) -> int:
        """Trials not ended, and runs of the two configurations on the other seeds not stored, at most."""
        study = next((s for s in studies(rows) if s.id == self.settings["study"]), None)
        ended = {number for number, trial in (study.trials if study else {}).items() if trial.ended}
        others = sum(1 for row in (study.rows if study else []) if row["seed"] != self.seeds[0]
                     and row["status"] == "finished")
        return len(set(range(self.tune.trials)) - ended) + max(0, 2 * (len(self.seeds) - 1) - others)

    def waiting(self) -> list[dict]:
        """For dry runs and estimates: every trial (at the defaults' cost) and both configurations' other seeds."""
        at_defaults = self.spec(0, self.defaults).dump()
        trials = [{**at_defaults, "seed": self.seeds[0], "after": "tuning", "trial": number}
                  for number in range(self.tune.trials)]
        return trials + [{**at_defaults, "seed": seed, "after": "tuning"} for seed in self.seeds[1:] for _ in range(2)]


def _space(suite: Suite, tune: Tune, point: MethodPoint) -> dict[str, Axis]:
    """The study's axes: the method's (peftbench.tuning.space), with the suite's tune.space entry for the method
    (under any spelling the suite wrote for it, or its name) replacing or adding axes, each checked."""
    method, written = point.method, point.written
    key = next((key for key in point.keys if key in tune.space), None)
    fixed = {name for text in written for name in MethodSpec.parse(text).options}
    overrides = {name: override_axis(name, value, f"tune.space.{key}") for name, value in
                 (tune.space.get(key) or {}).items()}
    for name in overrides:
        if name != LR and name not in method.options.model_fields:
            raise UserError(f"tune.space.{key}: '{name}' is neither lr nor an option of {method.name}"
                            f" ({', '.join(method.options.model_fields) or 'none'})")
        if name != LR and overrides[name].is_range:
            raise UserError(f"tune.space.{key}.{name}: an option is searched over a list of its values, e.g."
                            f" {name}: [4, 8, 16]; a {{low, high}} range is for the learning rate")
        if name in fixed:
            raise UserError(f"tune.space.{key}.{name}: the suite's '{written[0]}' sets {name}; remove it from the"
                            " spec to search it, or from tune.space to keep it")
    space = search_space(point.lr, method.tuning_axes, fixed, overrides)
    written_options = MethodSpec.parse(point.template.method.spec).options
    for name, axis in space.items():
        for value in axis.choices if name != LR else ():  # each value one the option takes, on this model
            spec = MethodSpec(name=method.name, options={**written_options, name: str(value)})
            method.parse_options(spec)
            try:
                count(point.template.model.name, str(spec))
            except UserError as error:
                raise UserError(f"tune.space: {name}={value} does not fit {point.template.model.name} ({error});"
                                f" set tune.space.{key or method.name}.{name} to the values that fit") from None
    return space


def tuning(suite: Suite, point: MethodPoint) -> tuple[list[Run], list[Stage]]:
    """The planning strategy of `peftbench tune` (peftbench.planning.Strategy): a study per method and block."""
    tune = suite.tune or Tune()
    if suite.sweep:
        raise UserError("a suite with a sweep chooses its learning rates by the sweep; `peftbench tune` searches"
                        " them itself: remove the suite's sweep")
    if suite.sharding:
        raise UserError("`peftbench tune` does not train sharded runs yet; remove the suite's sharding")
    space = _space(suite, tune, point)
    stage = StudyStage(point.template, point, space, tune, list(suite.seeds), suite.save)
    if not space[LR].contains(point.lr):
        raise UserError(f"tune.space: the learning rate range {space[LR].text()} of {point.template.method.spec}"
                        f" leaves out its default {point.lr:g}, which trial 0 runs; widen the range")
    model = point.template.model.name
    for name, axis in space.items():
        if name != LR and axis.choices and not axis.contains(stage.defaults[name]):
            raise UserError(f"tune.space: {axis.text()} of {point.template.method.spec} leaves out its default"
                            f" {name}={stage.defaults[name]}, which trial 0 runs; add it to the choices")
        if name != LR and point.method.virtual_tokens:  # the largest choice must fit the model's positions
            widest = stage.spec(0, {**stage.defaults, name: max(axis.choices)})
            check_positions(model, point.family, MethodSpec.parse(widest.method.spec), point.method,
                            widest.method.options, suite)
    return [], [stage]
