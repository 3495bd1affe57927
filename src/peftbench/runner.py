"""From a suite to stored results: expand the grid, check every input before anything is written,
then train, evaluate and measure each run, skipping runs the store already holds."""

import dataclasses
import functools
import math
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from peftbench.accounting import count
from peftbench.config import MethodSpec, Suite
from peftbench.data import Encoder, Splits, make_splits, rows_digest
from peftbench.errors import UserError
from peftbench.evaluate import TaskModel, classification_metrics, evaluate
from peftbench.heads import MeanPoolClassifier
from peftbench.measure import PeakMemory, parameter_counts, provenance, spec_hash
from peftbench.methods import METHODS
from peftbench.methods.base import Context, freeze, keep_model, merged_copy
from peftbench.models import load_model, model_family, resolve
from peftbench.store import Heartbeat, Store
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

    @property
    def run_id(self) -> str:
        return spec_hash(self.spec)

    @property
    def label(self) -> str:
        spec = self.spec
        return f"{spec['model']} · {spec['task']} · {spec['method_spec']} · n={spec['n_train']} · seed {spec['seed']}"


@dataclass
class Plan:
    suite: Suite
    runs: list[Run]
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    splits: dict[str, Splits] = field(default_factory=dict)


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
    if overrides.scales:
        changes["scales"] = [int(s) if s.isdigit() else s for s in overrides.scales]
    from pydantic import ValidationError

    try:
        return Suite.model_validate({**suite.model_dump(), **changes})
    except ValidationError as error:
        first = error.errors()[0]
        raise UserError(f"bad override for {first['loc'][0]}: {first['msg'].removeprefix('Value error, ')}") from None


def plan(suite: Suite, overrides: Overrides = Overrides()) -> Plan:
    """Expand and validate the whole grid: every name resolved, every file read, every scale checked."""
    suite = _apply_overrides(suite, overrides)
    families = {name: model_family(resolve(name)) for name in suite.models}
    methods = [(spec, METHODS.get(spec.name)) for spec in suite.method_specs()]
    options = {str(spec): method.parse_options(spec) for spec, method in methods}
    for model_name in suite.models:
        for spec, _ in methods:
            count(model_name, str(spec))  # a method that does not fit the architecture fails here, not mid-grid
    result = Plan(suite=suite, runs=[])
    for task_ref in suite.tasks:
        name, test_path = (task_ref, None) if isinstance(task_ref, str) else (f"file:{task_ref.file}", task_ref.test)
        task = get_task(name, test_path)
        splits = make_splits(task, task.load(), suite.split_seed, suite.val_cap, suite.test_cap)
        result.tasks[name], result.splits[name] = task, splits
        for model_name, family in families.items():
            if family == "encoder" and task.kind == "generation":
                raise UserError(f"task '{name}' is generation but model '{model_name}' is an encoder;"
                                " use a decoder or encoder-decoder model for it")
            for scale in suite.scales:
                n_train = suite.training_size(scale, len(splits.train), name)
                common = {"model": model_name, "task": name, "task_source": task.source, "scale": scale,
                          "n_train": n_train, "split_seed": suite.split_seed, "val_cap": suite.val_cap,
                          "test_cap": suite.test_cap, "eval": suite.eval, "group_by_length": suite.group_by_length, "max_input_length": suite.max_input_length,
                          "merge_for_eval": suite.merge_for_eval, "bf16_autocast": suite.bf16_autocast,
                          "max_target_length": suite.max_target_length}
                for baseline in suite.baselines:
                    if baseline == "majority" and task.kind == "generation":
                        continue  # no majority answer for free text
                    if baseline == "zero_shot" and family == "encoder":
                        continue  # an untrained classification head is chance, not zero-shot ability
                    result.runs.append(Run({**common, "method": baseline, "method_spec": baseline,
                                            "method_options": {}, "seed": suite.seeds[0]}, kind="baseline"))
                for spec, method in methods:
                    lr = suite.learning_rates.get(str(spec), suite.learning_rates.get(spec.name, method.default_lr))
                    for seed in suite.seeds:
                        result.runs.append(Run({
                            **common, "method": spec.name, "method_spec": str(spec),
                            "method_options": options[str(spec)].model_dump(), "seed": seed, "lr": lr,
                            "peak_factor": suite.schedule.peak_factor or method.peak_factor,
                            "final_factor": suite.schedule.final_factor if suite.schedule.final_factor is not None
                            else method.final_factor,
                            "warmup_ratio": suite.schedule.warmup_ratio, "epochs": suite.epochs_for(scale, n_train),
                            "batch_size": suite.batch_size, "grad_accum": suite.grad_accum,
                            "patience": suite.patience, "max_minutes": suite.max_minutes,
                            "weight_decay": suite.weight_decay, "max_grad_norm": suite.max_grad_norm,
                            "fused_adamw": suite.fused_adamw,
                        }, kind="train"))
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
    loaded = load_model(spec["model"], random_init)
    torch.manual_seed(spec["seed"])
    model, context = loaded.model, Context(family=loaded.family, seed=spec["seed"], total_steps=_total_steps(spec))
    step_hook = None
    if method_name is None:
        freeze(model)
    else:
        method = METHODS.get(method_name)
        model = method.apply(model, method.parse_options(MethodSpec.parse(spec["method_spec"])), context)
        if method.on_optimizer_step:
            step_hook = functools.partial(method.on_optimizer_step, model)
    uses_head = loaded.family == "encoder"
    if uses_head:
        model = MeanPoolClassifier(model, loaded.model.config.hidden_size, len(task.labels))
        model.head.requires_grad_(method_name is not None)
    encoder = Encoder(task, loaded.family, loaded.tokenizer, spec["max_input_length"], spec["max_target_length"])
    return TaskModel(model=model, encoder=encoder, uses_head=uses_head, group_by_length=spec["group_by_length"],
                     bf16_autocast=spec["bf16_autocast"], method_record=context.record, on_optimizer_step=step_hook)


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


def execute_train(spec: dict, task: TaskSpec, splits: Splits, device: torch.device,
                  on_step: Callable[[int, int], None] | None = None) -> dict:
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
        fused_adamw=spec["fused_adamw"])
    trained = train(task_model, train_examples, val_examples, settings, on_step=on_step)
    evaluated = merged_for_eval(task_model, spec["method"]) if spec["merge_for_eval"] else task_model
    evaluation = _evaluate_timed(evaluated, splits.test, spec, spec["batch_size"])
    del evaluated
    peak, peak_kind = memory.peak_bytes()
    return {
        **evaluation, **counts, "peak_memory_bytes": peak, "peak_memory_kind": peak_kind,
        "train_tokens_per_s": trained.train_tokens / trained.train_seconds if trained.train_seconds else None,
        "train_seconds": trained.train_seconds, "steps": trained.steps, "curve": trained.curve,
        "best_epoch": trained.best_epoch, "seconds_to_best": trained.seconds_to_best,
        "stopped_by": trained.stopped_by, "wall_s": time.perf_counter() - started,
        "method_record": task_model.method_record,
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
            "data_digest": data_digest, "provenance": provenance(device, spec)}


class RunInterrupted(Exception):
    """Raised from an `on_step` callback to stop training after the current step."""


Outcome = tuple[str, dict, str | None]  # status (finished | failed | interrupted), result, error


def execute_one(run: Run, task: TaskSpec, splits: Splits, device: torch.device,
                on_step: Callable[[int, int], None] | None = None) -> Outcome:
    """Train (or evaluate, for a baseline) one run. Its OOM, NaN loss or exception becomes a failed
    outcome, so one run cannot stop a grid; only a user mistake raises. Every executor calls this."""
    try:
        if run.kind == "baseline":
            result = execute_baseline(run.spec, task, splits, device)
        else:
            result = execute_train(run.spec, task, splits, device, on_step)
        return "finished", _finish(result, task, splits, run.spec, device), None
    except UserError:
        raise
    except RunInterrupted as stop:
        return "interrupted", {}, str(stop)
    except Exception as error:  # OOM, NaN loss, a library error: record it and go on with the grid
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return "failed", {"traceback": traceback.format_exc(limit=5)}, f"{type(error).__name__}: {error}"


class GridInterrupted(Exception):
    """SIGINT stopped the grid; the message says how many runs were stored as interrupted."""


def lease_seconds() -> float:
    """How long a claim lasts without renewal: a rerun after a crash waits at most this long for the
    dead runner's claims. Short in tests (PEFTBENCH_LEASE_SECONDS)."""
    return float(os.environ.get("PEFTBENCH_LEASE_SECONDS", "30"))


@contextmanager
def _stop_on_sigint() -> Iterator[threading.Event]:
    """The first SIGINT sets the returned event (runs stop after their current step); a second one
    raises KeyboardInterrupt at once."""
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def request_stop(signum, frame) -> None:
        stop.set()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, request_stop)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def execute(plan_: Plan, store: Store, executor: "Executor", progress=None) -> dict[str, int]:
    """Run every unfinished run of the plan on `executor` (see peftbench.executors), claiming each in
    the store first and storing each as it ends; a failing run is stored as failed and the grid goes
    on. Runs another runner holds are waited for, and taken over if its lease lapses. Returns counts of
    finished, failed and skipped runs; raises GridInterrupted after a SIGINT."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # readable, and unique per call
    since, lease = time.time(), lease_seconds()
    done = store.finished_ids()
    todo = [run for run in plan_.runs if run.run_id not in done]
    counts = Counter(skipped=len(plan_.runs) - len(todo))
    overall = progress.add_task("grid", total=len(todo)) if progress else None
    step_tasks: dict[str, object] = {}

    def claim(run: Run) -> bool:
        return store.claim(run.run_id, run.kind, plan_.suite.name, run.spec, owner, since, lease)

    def on_step(run: Run, step: int, total: int | None) -> None:
        if progress:
            if run.run_id not in step_tasks:
                step_tasks[run.run_id] = progress.add_task(run.label, total=total)
            progress.update(step_tasks[run.run_id], completed=step)

    with _stop_on_sigint() as stop, Heartbeat(store.path, owner, lease):
        try:
            while todo and not stop.is_set():
                for run, (status, result, error) in executor.run(todo, plan_, claim, stop, on_step):
                    if store.end(run.run_id, owner, status, result, error):
                        counts[status] += 1
                    if progress:
                        if run.run_id in step_tasks:
                            progress.remove_task(step_tasks.pop(run.run_id))
                        progress.advance(overall)
                held = store.running_elsewhere(owner)
                todo = [run for run in todo if run.run_id in held]
                if todo:
                    stop.wait(lease / 3)  # until their runners end them or their leases lapse
        finally:
            # Nothing this runner claimed stays `running` after it leaves, whatever made it leave.
            reason = "stopped by SIGINT" if stop.is_set() else "the runner stopped before this run ended"
            if abandoned := store.abandon(owner, reason):
                counts["interrupted"] += abandoned
    if stop.is_set():
        raise GridInterrupted(f"interrupted: {counts['interrupted']} run(s) stored as interrupted,"
                              f" {counts['finished']} finished; run the same command again to resume")
    return dict(counts)
