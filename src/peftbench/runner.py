"""From a suite to stored results: expand the grid, check every input before anything is written,
then train, evaluate and measure each run, skipping runs the store already holds."""

import dataclasses
import functools
import math
import os
import signal
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import TYPE_CHECKING

import torch

from peftbench.accounting import count, learned_positions
from peftbench.artifacts import SavePolicy, trained_tensors
from peftbench.artifacts import save as save_weights
from peftbench.config import ALL, NAMED_SCALES, MethodSpec, Suite
from peftbench.data import IGNORE, Encoder, Splits, make_splits, rows_digest, split_sizes
from peftbench.errors import UserError, parse_number
from peftbench.evaluate import TaskModel, classification_metrics, evaluate
from peftbench.flops import flops_per_token, peak_flops, utilisation
from peftbench.heads import MeanPoolClassifier
from peftbench.interrupts import RunInterrupted, deferred, requested, stop_on_signals
from peftbench.measure import PeakMemory, parameter_counts, provenance, spec_hash
from peftbench.methods import METHODS
from peftbench.methods.base import Context, freeze, keep_model, merged_copy
from peftbench.models import load_model, model_family, resolve
from peftbench.precision import describe
from peftbench.prices import usd_per_hour
from peftbench.store import Heartbeat, Store, runner_id
from peftbench.sweep import select_lr
from peftbench.tasks import TaskSpec, get_task
from peftbench.train import TrainSettings, train

if TYPE_CHECKING:
    from peftbench.executors import Executor

EVAL_BATCH_FACTOR = 2  # evaluation holds no gradients, so it can take larger batches


@dataclass
class Run:
    """One grid point. `spec` is the normalised, JSON-able description whose hash is the run id."""

    spec: dict
    kind: str  # train | baseline
    save: SavePolicy = "methods"  # what the run keeps beside the store (peftbench.artifacts); not in its id

    @property
    def run_id(self) -> str:
        return spec_hash(self.spec)

    @property
    def label(self) -> str:
        spec = self.spec
        return f"{spec['model']} · {spec['task']} · {spec['method_spec']} · n={spec['n_train']} · seed {spec['seed']}"


@dataclass
class FollowUp:
    """The seeds of a sweep group still to run once its sweep has chosen an LR: `template` is their spec
    without lr and seed."""

    template: dict
    sweep: dict

    save: SavePolicy = "methods"

    def runs(self, lr: float) -> list[Run]:
        return [Run({**self.template, "lr": lr, "seed": seed}, kind="train", save=self.save)
                for seed in self.sweep["seeds"][1:]]


@dataclass
class Plan:
    suite: Suite
    runs: list[Run]
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    splits: dict[str, Splits] = field(default_factory=dict)
    follow_ups: list[FollowUp] = field(default_factory=list)
    usd_per_hour: float | None = None  # the machine's price, for every run's cost

    @property
    def size(self) -> int:
        """Runs in all, counting the seeds that wait for their sweep."""
        return len(self.runs) + sum(len(f.sweep["seeds"]) - 1 for f in self.follow_ups)


@dataclass(frozen=True)
class Overrides:
    models: list[str] | None = None
    tasks: list[str] | None = None
    methods: list[str] | None = None
    scales: list[str] | None = None
    seeds: list[int] | None = None


def _apply_overrides(suite: Suite, overrides: Overrides) -> Suite:
    changes = {}
    for axis in ("models", "tasks", "methods", "seeds"):
        if getattr(overrides, axis):
            changes[axis] = getattr(overrides, axis)
    if suite.sweep and overrides.seeds:  # a sweep owns the seeds: the first sweeps, the others follow
        changes["sweep"] = {**suite.sweep.model_dump(), "then_seeds": changes.pop("seeds")}
    if overrides.scales:
        # ASCII digits only: str.isdigit() is also true of '²', which int() refuses
        changes["scales"] = [int(s) if s.isascii() and s.isdigit() else s for s in overrides.scales]
    from pydantic import ValidationError

    try:
        current = suite.model_dump(exclude={"seeds"} if "sweep" in changes else set())
        return Suite.model_validate({**current, **changes})
    except ValidationError as error:
        first = error.errors()[0]
        raise UserError(f"bad override for {first['loc'][0]}: {first['msg'].removeprefix('Value error, ')}") from None


def _budget(suite: Suite) -> dict | None:
    """The per-run budget as a training-time cap: dollars at the machine's price per hour."""
    if not suite.budget:
        return None
    price = suite.budget.gpu_usd_per_hour or usd_per_hour(suite.budget.gpu or suite.price)
    return {"usd": suite.budget.usd, "usd_per_hour": price, "seconds": suite.budget.usd / price * 3600}


def _nominal_size(suite: Suite, scale: str | int) -> int | None:
    """Training examples of a scale before the data is read (a dry run of hub tasks): at most this many."""
    return None if scale == ALL else NAMED_SCALES.get(scale, scale) if isinstance(scale, str) else scale


def _check_positions(model_name: str, family: str, spec: MethodSpec, method, options, suite: Suite) -> None:
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


def plan(suite: Suite, overrides: Overrides = Overrides(), load_data: bool = True) -> Plan:
    """Expand and validate the whole grid: every name resolved, every file read, every scale checked.
    Every task's data is loaded here, before anything is stored: run ids hold each task's training size and
    the splits it draws, and a dataset that cannot be loaded is a user error (one line naming it) rather
    than a grid that runs without it. With `load_data` False (a dry run) hub datasets are not downloaded:
    their runs show the scale's nominal size, and their ids are not final."""
    suite = _apply_overrides(suite, overrides)
    families = {name: model_family(resolve(name)) for name in suite.models}
    methods = [(spec, METHODS.get(spec.name)) for spec in suite.method_specs()]
    options = {str(spec): method.parse_options(spec) for spec, method in methods}
    for model_name in suite.models:
        for spec, method in methods:
            count(model_name, str(spec))  # a method that does not fit the architecture fails here, not mid-grid
            _check_positions(model_name, families[model_name], spec, method, options[str(spec)], suite)
    budget = _budget(suite)
    price = usd_per_hour(suite.price) if suite.price is not None else budget["usd_per_hour"] if budget else None
    result = Plan(suite=suite, runs=[], usd_per_hour=price)
    for task_ref in suite.tasks:
        name, test_path, mapping = (task_ref, None, None) if isinstance(task_ref, str) else \
            (f"file:{task_ref.file}", task_ref.test, task_ref.columns())
        task = get_task(name, test_path, mapping)
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
                common = {"model": model_name, "task": name, "task_source": task.source, "scale": scale,
                          "n_train": n_train, "split_seed": suite.split_seed, "val_cap": suite.val_cap,
                          "test_cap": suite.test_cap, "eval": suite.eval, "group_by_length": suite.group_by_length,
                          "max_input_length": suite.max_input_length, "max_target_length": suite.max_target_length,
                          "merge_for_eval": suite.merge_for_eval, "bf16_autocast": suite.bf16_autocast,
                          "cpu_bf16": suite.cpu_bf16, "weights_dtype": suite.weights_dtype}
                for baseline in suite.baselines:
                    if baseline == "majority" and task.kind == "generation":
                        continue  # no majority answer for free text
                    if baseline == "zero_shot" and family == "encoder":
                        continue  # an untrained classification head is chance, not zero-shot ability
                    result.runs.append(Run({**common, "method": baseline, "method_spec": baseline,
                                            "method_options": {}, "seed": suite.seeds[0]}, kind="baseline"))
                for spec, method in methods:
                    template = {
                        **common, "method": spec.name, "method_spec": str(spec),
                        "method_options": options[str(spec)].model_dump(),
                        "peak_factor": suite.schedule.peak_factor or method.peak_factor,
                        "final_factor": suite.schedule.final_factor if suite.schedule.final_factor is not None
                        else method.final_factor,
                        "warmup_ratio": suite.schedule.warmup_ratio, "epochs": suite.epochs_for(scale, n_train or 0),
                        "batch_size": suite.batch_size, "grad_accum": suite.grad_accum,
                        "patience": suite.patience, "max_minutes": suite.max_minutes,
                        "weight_decay": suite.weight_decay, "max_grad_norm": suite.max_grad_norm,
                        "fused_adamw": suite.fused_adamw, **({"budget": budget} if budget else {}),
                        # Only when on, so that the ids of runs stored before the key existed stay the same.
                        **({"gradient_checkpointing": True} if suite.gradient_checkpointing else {}),
                    }
                    if suite.sweep:
                        sweep = {"lrs": suite.sweep.lr, "select_by": suite.sweep.select_by, "seeds": suite.seeds}
                        template["sweep"] = {**sweep, "group": spec_hash({**template, "sweep": sweep})}
                        result.runs += [Run({**template, "lr": lr, "seed": suite.seeds[0]}, kind="train",
                                            save=suite.save) for lr in suite.sweep.lr]
                        if len(suite.seeds) > 1:
                            result.follow_ups.append(FollowUp(template, template["sweep"], suite.save))
                        continue
                    lr = suite.learning_rates.get(str(spec), suite.learning_rates.get(spec.name, method.default_lr))
                    result.runs += [Run({**template, "lr": lr, "seed": seed}, kind="train", save=suite.save)
                                    for seed in suite.seeds]
    return result


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def _total_steps(spec: dict) -> int | None:
    """Optimizer steps of a training run (None for baselines, which do not train)."""
    if "epochs" not in spec:
        return None
    batches = math.ceil(spec["n_train"] / spec["batch_size"])
    return math.ceil(batches / spec["grad_accum"]) * spec["epochs"]


def build_task_model(spec: dict, task: TaskSpec, method_name: str | None, random_init: bool = False) -> TaskModel:
    """Load the model, apply the method (None: no training, all frozen) and, for an encoder on a
    classification task, put the mean-pooling head on top. Seeded so the head starts alike per seed.
    `random_init`: the checkpoint's architecture with random weights (profiling)."""
    # Specs written before weights_dtype existed (and profile's) ran on fp32 master weights.
    loaded = load_model(spec["model"], random_init, spec.get("weights_dtype", "float32"))
    if spec.get("gradient_checkpointing"):
        # Non-reentrant: gradients reach the trainable tensors even when no input requires grad (PEFT methods
        # over frozen embeddings), and the layers' forward hooks (prefixes, adapters) rerun on recomputation.
        loaded.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base_ids = frozenset(id(p) for p in loaded.model.parameters())
    torch.manual_seed(spec["seed"])
    model, context = loaded.model, Context(family=loaded.family, seed=spec["seed"], total_steps=_total_steps(spec))
    step_hook = None
    if method_name is None:
        freeze(model)
    else:
        method = METHODS.get(method_name)
        model = method.apply(model, method.parse_options(MethodSpec.parse(spec["method_spec"])), context)
        if method.on_optimizer_step:
            step_hook = functools.partial(method.on_optimizer_step, model, context)
    uses_head = loaded.family == "encoder"
    if uses_head:
        model = MeanPoolClassifier(model, loaded.model.config.hidden_size, len(task.labels))
        model.head.to(loaded.model.dtype)
        model.head.requires_grad_(method_name is not None)
    encoder = Encoder(task, loaded.family, loaded.tokenizer, spec["max_input_length"], spec["max_target_length"])
    return TaskModel(model=model, encoder=encoder, uses_head=uses_head, group_by_length=spec["group_by_length"],
                     bf16_autocast=spec["bf16_autocast"], cpu_bf16=spec.get("cpu_bf16", "off"),
                     method_record=context.record, on_optimizer_step=step_hook, base_parameter_ids=base_ids)


def merged_for_eval(task_model: TaskModel, method_name: str) -> TaskModel:
    """The task model with the method folded into a copy of the weights, for faster evaluation; the
    trained model is left as it is. Methods that train weights in place (full, BitFit) have nothing to
    fold, and the others with no merge are returned unchanged."""
    method = METHODS.get(method_name)
    if method.merge is None or method.merge is keep_model:
        return task_model
    merge = method.merge
    if task_model.uses_head:
        def merge(classifier: MeanPoolClassifier) -> MeanPoolClassifier:  # the head has nothing to fold
            classifier.backbone = method.merge(classifier.backbone)
            return classifier
    return dataclasses.replace(task_model, model=merged_copy(task_model.model, merge))


def _evaluate_timed(task_model: TaskModel, rows: list, spec: dict, batch_size: int) -> dict:
    started = time.perf_counter()
    metrics, tokens = evaluate(task_model, rows, batch_size * EVAL_BATCH_FACTOR, spec["eval"], spec["max_target_length"])
    seconds = time.perf_counter() - started
    return {"metrics": metrics, "infer_tokens_per_s": tokens / seconds if seconds else None, "eval_seconds": seconds}


def _mean_lengths(examples: list[dict], family: str) -> tuple[int, int]:
    """Mean input and target tokens of encoded examples: a decoder's input is its masked (prompt) labels."""
    def lengths(example: dict) -> tuple[int, int]:
        if family == "encoder":
            return len(example["input_ids"]), 0
        if family == "seq2seq":
            return len(example["input_ids"]), len(example["labels"])
        prompt = sum(label == IGNORE for label in example["labels"])
        return prompt, len(example["input_ids"]) - prompt

    inputs, targets = zip(*map(lengths, examples))
    return round(sum(inputs) / len(inputs)), round(sum(targets) / len(targets))


def _kept_tensors(task_model: TaskModel, method_name: str, save: SavePolicy) -> tuple[dict | None, str | None]:
    """The run's trained tensors if its save policy keeps them, else None and why not."""
    if save == "none":
        return None, "the suite's save is none"
    if save == "methods" and METHODS.get(method_name).checkpoint_is_model:
        return None, "full tuning trains the whole model: kept only with save: all"
    return trained_tensors(task_model.model, task_model.base_parameter_ids), None


def execute_train(spec: dict, task: TaskSpec, splits: Splits, device: torch.device,
                  on_step: Callable[[int, int, float | None], None] | None = None, save: SavePolicy = "none") -> dict:
    started = time.perf_counter()
    memory = PeakMemory(device)
    memory.reset()
    task_model = build_task_model(spec, task, spec["method"])
    counts = parameter_counts(task_model.model)
    task_model.model.to(device)
    encode = task_model.encoder.encode
    train_examples = [encode(row) for row in splits.train_at(spec["n_train"])]
    val_examples = [encode(row) for row in splits.val]
    settings = TrainSettings(
        lr=spec["lr"], peak_factor=spec["peak_factor"], final_factor=spec["final_factor"],
        warmup_ratio=spec["warmup_ratio"], epochs=spec["epochs"], batch_size=spec["batch_size"],
        grad_accum=spec["grad_accum"], patience=spec["patience"], seed=spec["seed"],
        weight_decay=spec["weight_decay"], max_grad_norm=spec["max_grad_norm"], max_minutes=spec["max_minutes"],
        budget_seconds=spec["budget"]["seconds"] if spec.get("budget") else None, fused_adamw=spec["fused_adamw"])
    trained = train(task_model, train_examples, val_examples, settings, on_step=on_step)
    # The training peak (Lialin et al. Table 5), read before evaluation: a merged copy must not count in it.
    peak, peak_kind = memory.peak_bytes()
    tensors, not_kept = _kept_tensors(task_model, spec["method"], save)  # the best epoch's, as evaluated
    evaluated = merged_for_eval(task_model, spec["method"]) if spec["merge_for_eval"] else task_model
    selection = {}
    if spec.get("sweep", {}).get("select_by") == "val_score":  # the sweep picks on validation, never on test
        val_metrics = _evaluate_timed(evaluated, splits.val, spec, spec["batch_size"])["metrics"]
        selection = {"val_score": val_metrics.get(task.primary_metric), "val_metrics": val_metrics}
    evaluation = _evaluate_timed(evaluated, splits.test, spec, spec["batch_size"])
    del evaluated
    train_tokens_per_s = trained.train_tokens / trained.train_seconds if trained.train_seconds else None
    lengths = _mean_lengths(train_examples, task_model.encoder.family)
    flops = flops_per_token(spec["model"], spec["method_spec"], *lengths, seed=spec["seed"])
    return {
        **evaluation, **counts, "peak_memory_bytes": peak, "peak_memory_kind": peak_kind,
        "flops": flops, **utilisation(flops, train_tokens_per_s, evaluation["infer_tokens_per_s"],
                                      peak_flops(device, task_model.autocast_dtype)),
        "precision": describe(device, spec["bf16_autocast"], spec.get("cpu_bf16", "off"),
                              next(task_model.model.parameters()).dtype),
        "train_tokens_per_s": train_tokens_per_s,
        "train_seconds": trained.train_seconds, "steps": trained.steps, "curve": trained.curve,
        "best_epoch": trained.best_epoch, "seconds_to_best": trained.seconds_to_best,
        "best_val_loss": trained.best_val_loss if math.isfinite(trained.best_val_loss) else None, **selection,
        "stopped_by": trained.stopped_by, "wall_s": time.perf_counter() - started,
        "method_record": task_model.method_record, "family": task_model.encoder.family,
        TENSORS_KEY: tensors, **({"weights_skipped": not_kept} if not_kept else {}),
    }


def execute_baseline(spec: dict, task: TaskSpec, splits: Splits, device: torch.device) -> dict:
    started = time.perf_counter()
    if spec["method"] == "majority":
        train_labels = [task.target(row) for row in splits.train_at(spec["n_train"])]
        majority = Counter(train_labels).most_common(1)[0][0]
        golds = [task.target(row) for row in splits.test]
        result = {"metrics": {**classification_metrics(golds, [majority] * len(golds), task.labels),
                              "majority_label": majority}}
    else:
        task_model = build_task_model(spec, task, method_name=None)
        task_model.model.to(device)
        result = {**_evaluate_timed(task_model, splits.test, spec, batch_size=16),
                  **parameter_counts(task_model.model)}
    return {**result, "wall_s": time.perf_counter() - started}


def _finish(result: dict, task: TaskSpec, splits: Splits, spec: dict, device: torch.device) -> dict:
    primary = task.primary_metric
    data_digest = {"train": rows_digest(splits.train_at(spec["n_train"])),
                   "val": rows_digest(splits.val), "test": rows_digest(splits.test)}
    return {**result, "primary_metric": primary, "score": result["metrics"].get(primary),
            "data_digest": data_digest, "data_sizes": split_sizes(task, splits, spec["n_train"]),
            "provenance": provenance(device, spec)}


Outcome = tuple[str, dict, str | None]  # status (finished | failed | interrupted), result, error


def execute_one(run: Run, task: TaskSpec, splits: Splits, device: torch.device,
                on_step: Callable[[int, int, float | None], None] | None = None) -> Outcome:
    """Train (or evaluate, for a baseline) one run. Its OOM, NaN loss or exception becomes a failed
    outcome, so one run cannot stop a grid; only a user mistake raises. Every executor calls this."""
    try:
        if run.kind == "baseline":
            result = execute_baseline(run.spec, task, splits, device)
        else:
            result = execute_train(run.spec, task, splits, device, on_step, run.save)
        return "finished", _finish(result, task, splits, run.spec, device), None
    except UserError:
        raise
    except RunInterrupted as stop:
        return "interrupted", {}, str(stop)
    except Exception as error:  # OOM, NaN loss, a library error: record it and go on with the grid
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return "failed", {"traceback": traceback.format_exc(limit=5)}, f"{type(error).__name__}: {error}"


def resolve_follow_ups(plan_: Plan, rows: list[dict]) -> list[Run]:
    """The seed runs of every sweep group whose LR can be chosen from the stored sweep runs; a group
    whose every LR failed gets none."""
    by_group: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("sweep"):
            by_group.setdefault(row["sweep"]["group"], []).append(row)
    runs = []
    for follow_up in plan_.follow_ups:
        chosen = select_lr(by_group.get(follow_up.sweep["group"], []), follow_up.sweep)
        if chosen is not None:
            runs += follow_up.runs(chosen)
    return runs


TENSORS_KEY = "_tensors"  # the outcome's trained tensors, handed to the driver to write beside the store


def run_manifest(run: Run, task: TaskSpec, result: dict) -> dict:
    """What a saved run needs to be rebuilt and predict without its data: spec, task template and labels."""
    return {"run_id": run.run_id, "kind": run.kind, "spec": run.spec, "family": result["family"],
            "peftbench": version("peftbench"),
            "task": {"name": task.name, "kind": task.kind, "template": task.template, "target_field": task.target_field,
                     "primary_metric": task.primary_metric, "source": task.source, "description": task.description,
                     "label_map": [[key, word] for key, word in task.label_map.items()]}}


class GridInterrupted(Exception):
    """A SIGINT or SIGTERM stopped the grid; the message says how many runs were stored as interrupted."""


MIN_LEASE_SECONDS = 1.0  # the heartbeat renews every third of a lease: shorter ones lapse between beats


def lease_seconds() -> float:
    """How long a claim lasts without renewal: a rerun after a crash waits at most this long for the
    dead runner's claims. Short in tests (PEFTBENCH_LEASE_SECONDS)."""
    text = os.environ.get("PEFTBENCH_LEASE_SECONDS", "30")
    return parse_number(text, "PEFTBENCH_LEASE_SECONDS", minimum=MIN_LEASE_SECONDS,
                        fix="set it to a number of seconds such as 30 (the default), or unset it")


def execute(plan_: Plan, store: Store, executor: "Executor", progress=None) -> dict[str, int]:
    """Run every unfinished run of the plan on `executor` (see peftbench.executors), claiming each in
    the store first and storing each as it ends; a failing run is stored as failed and the grid goes
    on. Runs another runner holds are waited for, and taken over if its lease lapses. Returns counts of
    finished, failed and skipped runs; raises GridInterrupted after a SIGINT. `progress` (a
    peftbench.progress.GridProgress) hears of the grid's start, every step and every run's end."""
    owner = runner_id()
    since, lease = time.time(), lease_seconds()
    done = store.finished_ids()
    todo = [run for run in plan_.runs if run.run_id not in done]
    counts = Counter(skipped=len(plan_.runs) - len(todo))
    if progress:
        progress.start(todo, counts["skipped"], plan_.suite.name)

    def claim(run: Run) -> bool:
        return store.claim(run.run_id, run.kind, plan_.suite.name, run.spec, owner, since, lease)

    def on_step(run: Run, step: int, total: int | None, loss: float | None = None) -> None:
        if progress:
            progress.step(run, step, total, loss)

    def run_all(runs: list[Run]) -> None:
        while runs and not stop.is_set():
            for run, (status, result, error) in executor.run(runs, plan_, claim, stop, on_step):
                if status == "finished" and plan_.usd_per_hour is not None:
                    result["cost_usd"] = result["wall_s"] * plan_.usd_per_hour / 3600
                if tensors := result.pop(TENSORS_KEY, None):  # written before the row, which then points at them
                    result["weights"] = save_weights(store.path, run.run_id, tensors,
                                                     run_manifest(run, plan_.tasks[run.spec["task"]], result))
                if store.end(run.run_id, owner, status, result, error):
                    counts[status] += 1
                if progress:
                    progress.ended(run, status, result, error)
            held = store.running_elsewhere(owner)
            runs = [run for run in runs if run.run_id in held]
            if runs:
                if progress:
                    progress.waiting(runs)
                stop.wait(lease / 3)  # until their runners end them or their leases lapse

    with stop_on_signals() as stop, Heartbeat(store.path, owner, lease):
        try:
            run_all(todo)
            if plan_.follow_ups and not stop.is_set():
                # Every sweep run has ended (here or in another runner): choose each group's LR, then the other seeds.
                later = resolve_follow_ups(plan_, store.rows("train"))
                plan_.runs += later
                done = store.finished_ids()
                todo = [run for run in later if run.run_id not in done]
                counts["skipped"] += len(later) - len(todo)
                if progress:
                    progress.more(todo, len(later) - len(todo))
                run_all(todo)
        finally:
            # Nothing this runner claimed stays `running` after it leaves, whatever made it leave.
            reason = (f"stopped by {signal.Signals(requested.signal).name}" if stop.is_set()
                      else "the runner stopped before this run ended")
            with deferred():
                if abandoned := store.abandon(owner, reason):
                    counts["interrupted"] += abandoned
    if stop.is_set():
        raise GridInterrupted(f"interrupted: {counts['interrupted']} run(s) stored as interrupted,"
                              f" {counts['finished']} finished; run the same command again to resume")
    return dict(counts)
