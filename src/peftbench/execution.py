"""Executing one run: build the model with its method (or a baseline), train, evaluate and measure it, and
turn whatever goes wrong in it into a failed outcome, so that one run cannot stop a grid. Every executor
(peftbench.executors) calls `execute_one`."""

import contextlib
import dataclasses
import functools
import math
import time
import traceback
from collections.abc import Callable, Iterator
from importlib.metadata import version

import torch

from peftbench import forgetting
from peftbench.artifacts import AUTO_SAVE_LIMIT_BYTES, SavePolicy, adapter_state, own_tensor_ids, trained_tensors
from peftbench.baselines import BASELINES
from peftbench.data import IGNORE, Encoder, Splits, rows_digest, split_sizes
from peftbench.errors import UserError
from peftbench.evaluate import EVAL_BATCH_FACTOR, Scoring, TaskModel, evaluate
from peftbench.flops import flops_per_token, peak_flops, utilisation
from peftbench.heads import MeanPoolClassifier
from peftbench.interrupts import RunInterrupted
from peftbench.measure import PeakMemory, parameter_counts, provenance
from peftbench.methods import METHODS
from peftbench.methods.base import Context, freeze, keep_model, merged_copy
from peftbench.models import load_model, model_family, one_time_preparation
from peftbench.planning import Run
from peftbench.precision import describe
from peftbench.recording import facts_of_run
from peftbench.runspec import RunSpec
from peftbench.sharding import processes, train_sharded
from peftbench.tasks import TaskSpec
from peftbench.train import OnEpoch, train
from peftbench.tuning.search import Pruning
from peftbench.tuning.studies import TrialContext, objective


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def build_task_model(spec: RunSpec, task: TaskSpec, trains: bool = True, random_init: bool = False) -> TaskModel:
    """Load the model, apply the spec's method (unless the run does not train: then all is frozen) and, for an
    encoder on a classification task, put the mean-pooling head on top. Seeded so the head starts alike per
    seed. `random_init`: the checkpoint's architecture with random weights (profiling)."""
    loaded = load_model(spec.model.name, random_init, spec.model.weights_dtype)
    if spec.train is not None and spec.train.gradient_checkpointing:
        # Non-reentrant: gradients reach the trainable tensors even when no input requires grad (PEFT methods
        # over frozen embeddings), and the layers' forward hooks (prefixes, adapters) rerun on recomputation.
        loaded.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base_ids = own_tensor_ids(loaded.model)
    torch.manual_seed(spec.seed)
    model, context = loaded.model, Context(family=loaded.family, seed=spec.seed, total_steps=spec.total_steps)
    step_hook = learning_rate_factor = None
    if not trains:
        freeze(model)
    else:
        method = METHODS.get(spec.method.name)
        model = method.apply(model, spec.method.options, context)
        if method.on_optimizer_step:
            step_hook = functools.partial(method.on_optimizer_step, model, context)
        if method.learning_rate_factors:
            learning_rate_factor = method.learning_rate_factors(spec.method.options)
    uses_head = loaded.family == "encoder"
    if uses_head:
        model = MeanPoolClassifier(model, loaded.model.config.hidden_size, len(task.labels))
        model.head.to(loaded.model.dtype)
        model.head.requires_grad_(trains)
    data = spec.data
    encoder = Encoder(task, loaded.family, loaded.tokenizer, data.max_input_length, data.max_target_length)
    return TaskModel(model=model, encoder=encoder, uses_head=uses_head, group_by_length=data.group_by_length,
                     bf16_autocast=spec.model.bf16_autocast, cpu_bf16=spec.model.cpu_bf16,
                     method_record=context.record, on_optimizer_step=step_hook, base_tensor_ids=base_ids,
                     learning_rate_factor=learning_rate_factor)


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


# A run's step callback: (steps done, steps in all, the epoch's mean training loss so far) after each optimizer step,
# and (None, None, None, phase=what the run does now) as each of its other phases starts.
OnStep = Callable[..., None]


class Phases:
    """A run's phases other than its training steps, each named in the progress line as it starts (through the
    step callback's `phase`). Those that the run's wall time leaves out (the one-time model conversion, the base
    model's general-text loss, forgetting after training) are timed into `outside`, recorded as the result's
    `phase_seconds`, so that no time a user waits goes unaccounted."""

    def __init__(self, on_step: OnStep | None):
        self.on_step, self.outside = on_step, {}

    def show(self, what: str) -> None:
        if self.on_step:
            self.on_step(None, None, None, phase=what)

    @contextlib.contextmanager
    def outside_wall(self, key: str, what: str) -> Iterator[None]:
        self.show(what)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.outside[key] = self.outside.get(key, 0.0) + time.perf_counter() - started


def _evaluation_phase(task_model: TaskModel, rows: list, spec: dict, split: str) -> str:
    """The progress line's name for an evaluation pass: how the model answers, on how many rows."""
    task = task_model.encoder.task
    if task_model.uses_head:
        how = "classifying"
    elif task.kind == "classification" and spec["eval"] == "rank":
        how = "ranking the labels of"
    else:
        how = "generating for"
    return f"{how} {len(rows)} {split} rows"


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
    if save in ("methods", "auto") and METHODS.get(method_name).checkpoint_is_model:
        size = sum(t.numel() * t.element_size() for t in adapter_state(task_model.model, task_model.base_tensor_ids)
                   .values())
        if save == "methods" or size > AUTO_SAVE_LIMIT_BYTES:
            return None, (f"full tuning trains the whole model ({size / 1e6:,.0f} MB): kept with save: all"
                          + ("" if save == "methods" else f", or save: auto up to {AUTO_SAVE_LIMIT_BYTES / 1e6:,.0f}"
                                                          " MB"))
    return trained_tensors(task_model.model, task_model.base_tensor_ids), None


def _train_here(spec: RunSpec, task: TaskSpec, splits: Splits, device: torch.device, on_step,
                on_epoch: Callable[[TaskModel], OnEpoch] | None = None, val_scoring: Scoring | None = None) -> tuple:
    """Train in this process: (the trained task model, its encoded training examples, the training result, its
    peak memory). `on_epoch(task_model)`: what hears of each epoch (a tuning trial's pruner); `val_scoring`:
    each epoch's validation scores the set too, for it."""
    memory = PeakMemory(device)
    memory.reset()
    task_model = build_task_model(spec, task)
    task_model.model.to(device)
    encode = task_model.encoder.encode
    train_examples = [encode(row) for row in splits.train_at(spec.data.n_train)]
    val_examples = [encode(row) for row in splits.val]
    trained = train(task_model, train_examples, val_examples, spec.train, spec.seed, on_step=on_step,
                    on_epoch=on_epoch(task_model) if on_epoch else None, val_scoring=val_scoring)
    # The training peak (Lialin et al. Table 5), read before evaluation: a merged copy must not count in it.
    peak, peak_kind = memory.peak_bytes()
    return task_model, train_examples, trained, {"peak_memory_bytes": peak, "peak_memory_kind": peak_kind}


def _prepare_model(name: str, phases: Phases) -> None:
    """Whatever the model needs once before its first load (peftbench.models.one_time_preparation), named as a
    one-time phase."""
    if preparation := one_time_preparation(name):
        what, prepare = preparation
        with phases.outside_wall("converting", f"{what} (one-time, cached for later runs)"):
            prepare()


def _base_general_loss(run_spec: RunSpec, task: TaskSpec, device: torch.device,
                       phases: Phases | None = None) -> tuple[float, int] | None:
    """The base model's loss on the general text (peftbench.forgetting), for text-to-text runs; measured before
    the run is trained, so the base and the tuned model are never in memory together."""
    if not forgetting.applies(model_family(run_spec.model.name)):
        return None
    phases = phases or Phases(None)

    def build_base() -> TaskModel:
        base = build_task_model(run_spec, task, trains=False)
        base.model.to(device)
        return base

    with phases.outside_wall("base_loss", "the base model's general-text loss (once per model, cached)"):
        return forgetting.loss_before(run_spec.model, device, build_base)


def _pruner(trial: TrialContext, task: TaskSpec) -> Callable[[TaskModel], OnEpoch]:
    """A tuning trial's epoch hook: the validation metric its study selects by (the task's metric on the validation
    split, scored by the epoch's validation pass, or the validation loss), recorded in the curve and reported to
    the study's pruner (peftbench.tuning)."""
    pruning = Pruning(trial.settings, list(trial.history))

    def on_epoch(task_model: TaskModel, epoch: int, val_loss: float, val_metrics: dict | None) -> tuple[dict, bool]:
        observed = {"val_score": val_metrics.get(task.primary_metric)} if trial.select_by == "val_score" else {}
        value = objective(trial.select_by, observed.get("val_score"), val_loss)
        return observed, value is not None and pruning.should_stop(epoch, value)

    return lambda task_model: functools.partial(on_epoch, task_model)


def execute_train(spec: dict, task: TaskSpec, splits: Splits, device: torch.device,
                  on_step: OnStep | None = None, save: SavePolicy = "none", trial: TrialContext | None = None) -> dict:
    """Train, evaluate and measure one run. A tuning trial (`trial`) reports each epoch to its pruner; one pruned
    is not tested (its study never chooses it), so it records its curve, counts and time only."""
    run_spec, phases = RunSpec.load(spec), Phases(on_step)
    _prepare_model(run_spec.model.name, phases)
    before = _base_general_loss(run_spec, task, device, phases)
    phases.show("loading model and data")
    # The run's own time (loading, training, evaluating); the phases outside it are in phase_seconds.
    started = time.perf_counter()
    if trial is not None:
        scoring = Scoring(splits.val, spec["eval"], spec["max_target_length"]) if trial.select_by == "val_score" else None
        trained_by = functools.partial(_train_here, on_epoch=_pruner(trial, task), val_scoring=scoring)
    elif processes(spec) > 1:  # a sharded run (the suite's `sharding`) trains in processes of its own
        trained_by = functools.partial(train_sharded, build_task_model=build_task_model)
    else:
        trained_by = _train_here
    task_model, train_examples, trained, measured = trained_by(run_spec, task, splits, device, on_step)
    counts = parameter_counts(task_model.model)
    train_tokens_per_s = trained.train_tokens / trained.train_seconds if trained.train_seconds else None
    common = {**counts, **measured, "train_tokens_per_s": train_tokens_per_s, "train_seconds": trained.train_seconds,
              "steps": trained.steps, "curve": trained.curve, "best_epoch": trained.best_epoch,
              "seconds_to_best": trained.seconds_to_best,
              "best_val_loss": trained.best_val_loss if math.isfinite(trained.best_val_loss) else None,
              "stopped_by": trained.stopped_by, "method_record": task_model.method_record,
              "family": task_model.encoder.family}
    if trial is not None and trial.select_by == "val_score" and trained.best_epoch:
        common["val_score"] = trained.curve[trained.best_epoch - 1].get("val_score")  # the kept weights' score
    if trained.stopped_by == "pruned":
        return {**common, "metrics": {}, "wall_s": time.perf_counter() - started, "phase_seconds": phases.outside}
    tensors, not_kept = _kept_tensors(task_model, spec["method"], save)  # the best epoch's, as evaluated
    evaluated = merged_for_eval(task_model, spec["method"]) if spec["merge_for_eval"] else task_model
    selection = {}
    if spec.get("sweep", {}).get("select_by") == "val_score":  # the sweep picks on validation, never on test
        phases.show(_evaluation_phase(evaluated, splits.val, spec, "validation"))
        val_metrics = _evaluate_timed(evaluated, splits.val, spec, spec["batch_size"])["metrics"]
        selection = {"val_score": val_metrics.get(task.primary_metric), "val_metrics": val_metrics}
    phases.show(_evaluation_phase(evaluated, splits.test, spec, "test"))
    evaluation = _evaluate_timed(evaluated, splits.test, spec, spec["batch_size"])
    del evaluated
    lengths = _mean_lengths(train_examples, task_model.encoder.family)
    flops = flops_per_token(spec["model"], spec["method_spec"], *lengths, seed=spec["seed"])
    wall_s = time.perf_counter() - started
    forgot = {}
    if before:
        with phases.outside_wall("forgetting", "the tuned model's general-text loss (forgetting)"):
            forgot = forgetting.forgetting_fields(before, forgetting.general_loss(task_model))
    return {
        **evaluation, **common,
        "flops": flops, **utilisation(flops, train_tokens_per_s, evaluation["infer_tokens_per_s"],
                                      peak_flops(device, task_model.autocast_dtype)),
        "precision": describe(device, spec["bf16_autocast"], spec.get("cpu_bf16", "off"),
                              next(task_model.model.parameters()).dtype),
        **selection, "wall_s": wall_s, "phase_seconds": phases.outside, **forgot,
        TENSORS_KEY: tensors, **({"weights_skipped": not_kept} if not_kept else {}),
    }


def execute_baseline(spec: dict, task: TaskSpec, splits: Splits, device: torch.device,
                     on_step: OnStep | None = None) -> dict:
    phases = Phases(on_step)
    baseline = BASELINES.get(spec["method"])
    if baseline.uses_model:
        _prepare_model(spec["model"], phases)
    phases.show("loading model and data")
    started = time.perf_counter()
    if baseline.uses_model:
        task_model = build_task_model(RunSpec.load(spec), task, trains=False)
        task_model.model.to(device)
        phases.show(_evaluation_phase(task_model, splits.test, spec, "test"))
        result = {**_evaluate_timed(task_model, splits.test, spec, batch_size=16),
                  **parameter_counts(task_model.model), "family": task_model.encoder.family}
    else:
        result = {"metrics": baseline.score_without_model(task, splits.train_at(spec["n_train"]), splits.test),
                  "family": model_family(spec["model"])}
    return {**result, "wall_s": time.perf_counter() - started, "phase_seconds": phases.outside}


def _finish(result: dict, task: TaskSpec, splits: Splits, run: Run, device: torch.device) -> dict:
    primary, spec = task.primary_metric, run.spec
    data_digest = {"train": rows_digest(splits.train_at(spec["n_train"])),
                   "val": rows_digest(splits.val), "test": rows_digest(splits.test)}
    return {**result, "primary_metric": primary, "score": result["metrics"].get(primary),
            "data_digest": data_digest, "data_sizes": split_sizes(task, splits, spec["n_train"]),
            "provenance": provenance(device, spec), **facts_of_run(run, result)}


Outcome = tuple[str, dict, str | None]  # status (finished | failed | interrupted), result, error


def execute_one(run: Run, task: TaskSpec, splits: Splits, device: torch.device,
                on_step: OnStep | None = None) -> Outcome:
    """Train (or evaluate, for a baseline) one run. Its OOM, NaN loss or exception becomes a failed
    outcome, so one run cannot stop a grid; only a user mistake raises. Every executor calls this."""
    try:
        if run.kind == "baseline":
            result = execute_baseline(run.spec, task, splits, device, on_step)
        else:
            result = execute_train(run.spec, task, splits, device, on_step, run.save, run.trial)
        return "finished", _finish(result, task, splits, run, device), None
    except UserError:
        raise
    except RunInterrupted as stop:
        return "interrupted", {}, str(stop)
    except Exception as error:  # OOM, NaN loss, a library error: record it and go on with the grid
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return "failed", {"traceback": traceback.format_exc(limit=5)}, f"{type(error).__name__}: {error}"


TENSORS_KEY = "_tensors"  # the outcome's trained tensors, handed to the driver to write beside the store


def run_manifest(run: Run, task: TaskSpec, result: dict) -> dict:
    """What a saved run needs to be rebuilt and predict without its data: spec, task template and labels."""
    return {"run_id": run.run_id, "kind": run.kind, "spec": run.spec, "family": result["family"],
            "peftbench": version("peftbench"),
            "task": {"name": task.name, "kind": task.kind, "template": task.template, "target_field": task.target_field,
                     "primary_metric": task.primary_metric, "source": task.source, "description": task.description,
                     "label_map": [[key, word] for key, word in task.label_map.items()]}}
