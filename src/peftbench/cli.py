"""The `peftbench` command line. Every command takes --json and then prints JSON only on stdout;
progress goes to stderr. User mistakes print one line and exit with code 2."""

import contextlib
import json
import math
import os
import signal
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from peftbench.errors import UserError

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Library deprecation chatter would drown the progress display; real problems surface as errors.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="Unsupported layer type")  # PEFT LN tuning on nn.LayerNorm works
warnings.filterwarnings("ignore", message=".*requires_grad=True to a scalar")

app = typer.Typer(add_completion=False, no_args_is_help=False, help=__doc__)
DEFAULT_STORE = Path("peftbench-results/results.db")
JsonFlag = Annotated[bool, typer.Option("--json", help="print machine-readable JSON only")]
StoreOption = Annotated[Path, typer.Option("--store", help="SQLite results store")]


class ExecutorKind(str, Enum):
    local = "local"
    ray = "ray"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


WideFlag = Annotated[bool, typer.Option("--wide", help="every column, however wide (default: what fits)")]


def _stdout() -> Console:
    """Console for tables: COLUMNS when set (piped too), else the terminal's width, else wide (a file)."""
    from peftbench.terminal import console

    return console()


def _show(title: str | None, view: tuple, wide: bool = False) -> None:
    from peftbench.terminal import print_table

    cols, rows, notes = view
    print_table(title, cols, rows, wide=wide, notes=notes, out=_stdout())


def _show_runs(title: str, rows: list[dict], wide: bool) -> None:
    """Stored runs, one table per model and task, under a title line."""
    from peftbench.report.runs import runs_views
    from peftbench.terminal import print_table

    out = _stdout()
    out.print(title, markup=False, highlight=False, style="bold")
    views = runs_views(rows)
    hidden = [print_table(heading, cols, lines, wide=wide, notes=notes, out=out, say_hidden=False)
              for heading, cols, lines, notes in views]
    for line in dict.fromkeys(line for line in hidden if line):
        out.print(line, markup=False, highlight=False)
    if not views:
        out.print("no runs", markup=False, highlight=False)


def _finite(value):
    """JSON has no Infinity or NaN: a diverged run's non-finite numbers are printed as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _print_json(value) -> None:
    sys.stdout.write(json.dumps(_finite(value), indent=2, default=str, allow_nan=False) + "\n")


def _writable_folder(folder: Path, flag: str) -> None:
    """Refuse an output folder that cannot be one before anything trains (not after the whole grid)."""
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"{flag} '{folder}' cannot be a folder: '{blocker}' is a file, not a folder;"
                        " pass a folder path")


def summary_path(folder: Path, name: str, store: Path) -> Path:
    """`NAME.md` beside the default store; `NAME@STORE.md` for another store, so that two stores in one
    folder never overwrite each other's summaries (a suite name cannot contain '@')."""
    return folder / (f"{name}.md" if store.name == DEFAULT_STORE.name else f"{name}@{store.stem}.md")


@app.command()
def run(
    suite: Annotated[str, typer.Argument(help="suite file or built-in suite name")] = "quickstart",
    model: Annotated[list[str] | None, typer.Option("--model", help="replace the suite's models")] = None,
    task: Annotated[list[str] | None, typer.Option("--task", help="replace the suite's tasks (file:PATH for"
                                                                   " your own JSONL/CSV)")] = None,
    method: Annotated[list[str] | None, typer.Option("--method", help="replace the suite's methods")] = None,
    scale: Annotated[list[str] | None, typer.Option("--scale", help="replace the suite's scales")] = None,
    seed: Annotated[list[int] | None, typer.Option("--seed", help="replace the suite's seeds")] = None,
    settings: Annotated[list[str] | None, typer.Option("--set", help="set any suite key, validated like the"
                                                       " YAML: --set epochs=3 --set learning_rates.lora=1e-3")] = None,
    name: Annotated[str | None, typer.Option("--name", help="file the runs under this name (default: the suite's,"
                                             " or one made of the axes when flags take the grid outside it)")] = None,
    test_file: Annotated[str | None, typer.Option("--test-file", help="held-out test file for the --task file:")] = None,
    text_field: Annotated[str | None, typer.Option("--text-field", help="the file's text column")] = None,
    label_field: Annotated[str | None, typer.Option("--label-field", help="the file's label column")] = None,
    input_field: Annotated[str | None, typer.Option("--input-field", help="generation: the input column")] = None,
    target_field: Annotated[str | None, typer.Option("--target-field", help="generation: the target column")] = None,
    store: StoreOption = DEFAULT_STORE,
    out: Annotated[Path | None, typer.Option("--out", help="where the Markdown summary goes")] = None,
    device: Annotated[Device, typer.Option("--device", help="where to train")] = Device.auto,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the expanded grid and its estimated time,"
                                          " train nothing")] = False,
    executor: Annotated[ExecutorKind, typer.Option("--executor", help="run here one at a time, or as Ray tasks")]
    = ExecutorKind.local,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="join this Ray cluster (e.g. auto or HOST:6379); default: start a local one")] = None,
    gpus_per_run: Annotated[float | None, typer.Option(
        "--gpus-per-run", min=0, help="GPUs per Ray task; default 1 if the cluster has GPUs, else 0")] = None,
    cpus_per_run: Annotated[float, typer.Option("--cpus-per-run", min=0, help="CPUs per Ray task")] = 1,
    gpu_memory_gb: Annotated[float | None, typer.Option(
        "--gpu-memory-gb", help="plan memory for a GPU of this many GB (another machine); a real run then refuses"
                                " runs that would not fit it")] = None,
    wide: WideFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Train, evaluate and store every run of a suite (the offline quickstart by default)."""
    from peftbench.api import run_plan
    from peftbench.config import check_name, derived_name, file_task_flags, load_suite, within
    from peftbench.executors import LocalExecutor, ray_executor
    from peftbench.interrupts import exit_code, ignore_further_signals
    from peftbench.memory import device_target, refuse_unfit
    from peftbench.progress import GridProgress
    from peftbench.report import summary_markdown
    from peftbench.execution import pick_device
    from peftbench.planning import Overrides, plan
    from peftbench.recording import read_results
    from peftbench.runner import GridInterrupted, lease_seconds
    from peftbench.store import Store, read_rows

    tasks = file_task_flags(task, test_file, {"text": text_field, "label": label_field, "input": input_field,
                                              "target": target_field})
    overrides = Overrides(models=model, tasks=tasks, methods=method, scales=scale, seeds=seed)
    if name:
        check_name(name)
    if not dry_run:
        _writable_folder(out or store.parent, "--out" if out else "the store's folder")
        lease_seconds()  # a bad PEFTBENCH_LEASE_SECONDS is refused before anything loads
    base = load_suite(suite, settings or [])
    grid = plan(base, overrides, load_data=not dry_run)
    # Runs are filed under a name: the suite's while the flags only pick part of it, else one made of the axes.
    filed_as = name or (base.name if within(grid.suite, base) else derived_name(grid.suite))
    grid.suite = grid.suite.model_copy(update={"name": filed_as})
    chosen_device = pick_device(device.value)
    target = device_target(chosen_device, gpu_memory_gb)
    if dry_run:
        _print_grid(grid, read_rows(store), chosen_device, target, as_json)
        return
    if target.kind == "cuda":  # a run that cannot fit is refused before any weights load or the store opens
        refuse_unfit(grid, target)
    if ray_address and executor != ExecutorKind.ray:
        raise UserError("--ray-address needs --executor ray")
    if executor == ExecutorKind.ray:
        runs_on = ray_executor(ray_address, device.value, cpus_per_run, gpus_per_run)
    else:
        runs_on = contextlib.nullcontext(LocalExecutor(pick_device(device.value)))
    opened = Store(store)  # a damaged or unwritable store is refused before the progress display starts
    console = Console(stderr=True)
    reporter = GridProgress(console, bars=console.is_terminal, lines=not as_json or console.is_terminal)
    try:
        with runs_on as chosen, reporter:
            done = run_plan(grid, opened, chosen, reporter)
    except GridInterrupted as stop:
        ignore_further_signals()
        console.print(str(stop), markup=False, highlight=False, soft_wrap=True)
        sys.exit(exit_code())
    finally:
        opened.close()
    counts, rows = done.counts, done.rows
    ids = {r.run_id for r in grid.runs}
    suite_rows = [row for row in read_results(store) if row["suite"] == filed_as or row["run_id"] in ids]
    summary = summary_path(out or store.parent, filed_as, store)
    try:
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(summary_markdown(suite_rows, f"peftbench suite {filed_as}", store), encoding="utf-8")
    except OSError as error:
        raise UserError(f"the runs are stored, but the summary '{summary}' cannot be written ({error.strerror});"
                        " free space or pass --out FOLDER, then run the same command again") from None
    if as_json:
        from peftbench.configurations import random_weights

        _print_json({"suite": filed_as, "counts": counts, "store": str(store), "summary": str(summary),
                     "runs": [{**row, "random_weights": random_weights(row["model"])} for row in rows]})
        return
    _show_runs(f"suite {filed_as}: {len(rows)} runs", rows, wide)
    _stdout().print(f"trained {counts.get('finished', 0)}, skipped {counts.get('skipped', 0)} already stored,"
                    f" failed {counts.get('failed', 0)}; store {store}; summary {summary} (every run of"
                    f" '{filed_as}' in the store)", markup=False, highlight=False)


def _print_grid(grid, stored: list[dict], device, target, as_json: bool) -> None:
    from peftbench.views import dry_run_view

    data, lines = dry_run_view(grid, stored, device, target)
    if as_json:
        _print_json(data)
        return
    console = _stdout()
    for line in lines:
        console.print(Text(line))


RESULT_FIELDS = ("run_id", "kind", "suite", "model", "task", "method", "method_spec", "method_options", "scale",
                 "n_train", "seed", "lr", "peak_lr", "status", "attempts", "error", "primary_metric", "score", "metrics",
                 "trainable_params", "total_params", "peak_memory_bytes", "peak_memory_kind", "train_tokens_per_s",
                 "infer_tokens_per_s", "wall_s", "train_seconds", "best_epoch", "best_val_loss", "seconds_to_best",
                 "stopped_by", "steps", "cost_usd", "budget", "sweep", "val_score", "curve", "cpu_bf16", "precision",
                 "flops", "train_flops_per_s", "infer_flops_per_s", "train_mfu", "infer_mfu", "peak_flops_per_s",
                 "peak_source", "family", "weights", "weights_skipped", "random_weights", "schema_version", "provenance")


def _result_json(row: dict) -> dict:
    """A stored run as `results --json` gives it: with the peak learning rate and the random-weights flag."""
    from peftbench.configurations import random_weights

    lr, peak = row.get("lr"), row.get("peak_factor")
    extra = {"peak_lr": lr * peak if lr is not None and peak is not None else None,
             "random_weights": random_weights(row["model"])}
    return {key: extra[key] if key in extra else row.get(key) for key in RESULT_FIELDS}


@app.command()
def results(
    store: StoreOption = DEFAULT_STORE,
    baselines: Annotated[bool, typer.Option("--baselines", help="include majority and zero-shot rows")] = False,
    suite: Annotated[str | None, typer.Option("--suite", help="only runs of this suite")] = None,
    wide: WideFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """List stored runs (training runs; --baselines adds the baseline rows)."""
    from peftbench.store import read_rows, require_store

    require_store(store)
    rows = [row for row in read_rows(store) if (baselines or row["kind"] == "train")
            and (suite is None or row["suite"] == suite)]
    if as_json:
        _print_json([_result_json(row) for row in rows])
        return
    _show_runs(f"{len(rows)} runs in {store}", rows, wide)


@app.command()
def report(
    store: StoreOption = DEFAULT_STORE,
    out: Annotated[Path, typer.Option("--out", help="directory for the report")] = Path("peftbench-report"),
    formats: Annotated[str, typer.Option("--format", help="comma-separated: md, csv, tex, html")] = "md,csv,tex,html",
    suite: Annotated[str | None, typer.Option("--suite", help="only runs of this suite")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The answer first (per model, task and data size: the recommended method under each priority, its
    evidence and a chart), then tables (scores, statistics, ablations, convergence, per-parameter and
    per-minute scores, efficiency, cost, predictions) and plots, from the runs in a store."""
    from peftbench import report as report_
    from peftbench.recording import read_results
    from peftbench.store import require_store

    chosen = report_.parse_formats(formats)
    require_store(store)
    rows = [row for row in read_results(store) if suite is None or row["suite"] == suite]
    if not rows:
        raise UserError(f"the store '{store}' holds no runs" + (f" of suite '{suite}'" if suite else "")
                        + "; check --suite against `peftbench results`")
    console = Console(stderr=True)

    def say(message: str) -> None:
        if not as_json or console.is_terminal:
            console.print(message, markup=False, highlight=False)

    suites = sorted({row["suite"] for row in rows})
    say(f"building the summary and tables from {len(rows)} runs of {', '.join(suites)}")
    built = report_.build(rows, f"peftbench report: {suite or ', '.join(suites)}", store)
    written = report_.write(built, out, chosen, say)
    if as_json:
        _print_json({"out": str(out), "files": [str(path) for path in written],
                     "tables": [table.key for table in built.tables], "notes": built.intro})
        return
    page = out / "report.html"
    lead = f"open {page} in a browser (the summary comes first); " if "html" in chosen else ""
    others = sorted({path.relative_to(out).parts[0] + ("/" if len(path.relative_to(out).parts) > 1 else "")
                     for path in written if path != page})
    listed = f" ({', '.join(others)})" if others else ""
    _stdout().print(f"{lead}wrote {len(written)} file{'s' * (len(written) != 1)} under {out}{listed};"
                    f" {len(built.tables)} tables from {len(rows)} runs", markup=False, highlight=False)


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="a run id (or a unique prefix of one), as `results` lists them")],
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonFlag = False,
) -> None:
    """One run: its spec, metrics, loss curve and saved files."""
    from peftbench.api import find_run
    from peftbench.configurations import fmt_lr, random_weights

    row = find_run(run_id, store)
    weights = row.get("weights")
    folder = store.parent / weights["folder"] if weights else None
    files = {"folder": str(folder), "present": folder.is_dir(), **weights} if weights else None
    if as_json:
        _print_json({**row, "saved": files})
        return
    out = _stdout()
    say = lambda text: out.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    say(f"run {row['run_id']} ({row['kind']}, {row['status']}, {row.get('attempts', 1)} attempt(s)) of suite"
        f" {row['suite']}")
    learning_rate = (f" · lr {fmt_lr(row['lr'])} → peak {fmt_lr(row['lr'] * row.get('peak_factor', 1))}"
                     if "lr" in row else "")
    say(f"  {row['model']} · {row['task']} · {row['method_spec']} · n={row['n_train']} · seed {row['seed']}"
        + learning_rate)
    if row.get("error"):
        say(f"  error: {row['error']}")
    if row.get("score") is not None:
        metrics = {k: v for k, v in row.get("metrics", {}).items() if isinstance(v, (int, float))}
        weights = " (random weights: not evidence about the method)" if random_weights(row["model"]) else ""
        say(f"  {row['primary_metric']} {row['score']:.4f}{weights}; "
            + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    for point in row.get("curve") or []:
        say(f"  epoch {point['epoch']}: train loss {point['train_loss']:.4f}, validation loss {point['val_loss']:.4f}"
            f" at {point['seconds']:.1f} s")
    if files:
        state = "present" if files["present"] else "MISSING"
        say(f"  saved: {files['folder']} ({state}), {files['bytes']:,} bytes, {files['tensors']} tensors,"
            f" sha256 {files['sha256'][:16]}…")
    else:
        say(f"  saved: nothing ({row.get('weights_skipped', 'the run kept no weights')})")
    spec = {k: row[k] for k in sorted(row) if k in ("eval", "epochs", "batch_size", "grad_accum", "max_input_length",
                                                     "max_target_length", "patience", "warmup_ratio", "peak_factor",
                                                     "final_factor", "cpu_bf16", "bf16_autocast",
                                                     "gradient_checkpointing")}
    say("  settings: " + ", ".join(f"{k}={v}" for k, v in spec.items()))


@app.command()
def export(
    run_id: Annotated[str, typer.Argument(help="a run id (or a unique prefix of one)")],
    out: Annotated[Path, typer.Option("--out", help="a new or empty folder to write")],
    merged: Annotated[bool, typer.Option("--merged", help="a whole model with the method folded into its weights")]
    = False,
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonFlag = False,
) -> None:
    """Write a run's trained weights as a PEFT adapter folder (methods PEFT implements), a peftbench folder
    (`peftbench.load(DIR)`), or with --merged a whole transformers model; with a model card."""
    from peftbench.export import export as write_export

    done = write_export(run_id, store, out, merged)
    if as_json:
        _print_json(done)
        return
    _stdout().print(f"exported run {done['run_id']} as {done['format']} to {done['out']}: {', '.join(done['files'])}",
                    markup=False, highlight=False, soft_wrap=True)


class TaskType(str, Enum):
    classification = "classification"
    generation = "generation"


class Priority(str, Enum):
    performance = "performance"
    memory = "memory"
    time = "time"
    inference = "inference"


@app.command()
def recommend(
    task_type: Annotated[TaskType, typer.Option("--task-type", help="what the task asks for")],
    train_samples: Annotated[int, typer.Option("--train-samples", min=1, help="training examples you have")],
    priority: Annotated[Priority, typer.Option("--priority", help="what to optimise")] = Priority.performance,
    max_memory_gb: Annotated[float | None, typer.Option("--max-memory-gb", min=0, help="exclude methods whose"
                                                        " measured peak memory exceeds this")] = None,
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", min=0, help="exclude methods whose runs"
                                                      " took longer")] = None,
    max_usd: Annotated[float | None, typer.Option("--max-usd", min=0, help="exclude methods whose runs cost"
                                                  " more (or have no known price)")] = None,
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonFlag = False,
) -> None:
    """Rank methods for a task: from the store's measurements at a nearby data size when it has them,
    otherwise from the papers' findings, each cited."""
    from peftbench.recommend import Limits
    from peftbench.recommend import recommend as rank
    from peftbench.recording import read_results

    answer = rank(read_results(store), task_type.value, train_samples, priority.value,
                  Limits(max_memory_gb, max_minutes, max_usd))
    if as_json:
        _print_json(answer.as_dict())
        return
    console = _stdout()
    console.print(f"{answer.task_type}, {answer.train_samples} training examples, priority {answer.priority}:"
                  f" ranked from {answer.source.upper()}", markup=False, highlight=False)
    for place, choice in enumerate(answer.ranking, 1):
        console.print(f"{place}. {choice.method}", markup=False, highlight=False)
        for reason in choice.reasons:
            console.print(f"   - {reason}", markup=False, highlight=False)
        for source in dict.fromkeys(choice.sources):
            console.print(f"   source: {source}", markup=False, highlight=False)
        if choice.evidence:
            shown = ", ".join(choice.evidence[:6]) + (" ..." if len(choice.evidence) > 6 else "")
            console.print(f"   evidence: {len(choice.evidence)} runs ({shown})", markup=False, highlight=False)
    for item in answer.excluded:
        console.print(f"excluded {item['method']}: {item['reason']}", markup=False, highlight=False)
    for note in answer.notes:
        console.print(f"note: {note}", markup=False, highlight=False)


@app.command()
def methods(wide: WideFlag = False, as_json: JsonFlag = False) -> None:
    """List the fine-tuning methods, their options and learning-rate schedules (start → peak → end)."""
    from peftbench.methods import METHODS
    from peftbench.views import methods_view

    entries = [{"name": name, "summary": m.summary, "options": {k: str(f.default) for k, f in m.options.model_fields.items()},
                "default_lr": m.default_lr, "peak_lr": m.default_lr * m.peak_factor, "peak_factor": m.peak_factor,
                "final_factor": m.final_factor, "mergeable": m.mergeable, "identity_init": m.identity_init,
                "text_to_text_only": m.text_to_text_only, "source": m.source} for name, m in METHODS.items()]
    if as_json:
        _print_json(entries)
        return
    _show("methods", methods_view(entries), wide)


@app.command()
def tasks(wide: WideFlag = False, as_json: JsonFlag = False) -> None:
    """List the built-in tasks (and how to use your own data with file:PATH)."""
    from peftbench.tasks import TASKS
    from peftbench.views import tasks_view

    entries = [{"name": name, "kind": t.kind, "labels": t.labels, "primary_metric": t.primary_metric,
                "source": t.source, "description": t.description, "template": t.template} for name, t in TASKS.items()]
    if as_json:
        _print_json(entries)
        return
    _show("tasks", tasks_view(entries), wide)


@app.command()
def params(
    model: Annotated[str, typer.Argument(help="model name, e.g. config:flan-t5-xl")],
    method: Annotated[list[str] | None, typer.Option("--method", help="method spec, repeatable")] = None,
    suite: Annotated[str | None, typer.Option("--suite", help="count every method spec of this suite")] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed for layers=random draws")] = 0,
    wide: WideFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Count parameters per method on the meta device: total, trainable, added, changed after merge, and
    the adapter checkpoint size, each also as % of the base model."""
    from peftbench.accounting import count
    from peftbench.config import load_suite
    from peftbench.views import params_view

    specs = list(method or [])
    if suite:
        specs += load_suite(suite).methods
    if not specs:
        raise UserError("name at least one method (--method lora) or a suite (--suite pu2023)")
    rows = [count(model, spec, seed).as_row() for spec in dict.fromkeys(specs)]
    if as_json:
        _print_json(rows)
        return
    _show(f"parameters of {model} ({rows[0]['total']:,} in the base model)", params_view(rows), wide)


class DType(str, Enum):
    bf16 = "bf16"
    fp32 = "fp32"


class WeightsDType(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"


@app.command()
def memory(
    model: Annotated[str, typer.Argument(help="model name, e.g. config:t5-11b")],
    method: Annotated[list[str] | None, typer.Option("--method", help="method spec, repeatable (default full)")]
    = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="sequences per micro-batch")] = 8,
    seq_len: Annotated[int, typer.Option("--seq-len", help="input tokens per sequence")] = 128,
    target_len: Annotated[int, typer.Option("--target-len", help="target tokens (text-to-text models)")] = 8,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing",
                                                         help="plan with checkpointed layers")] = False,
    dtype: Annotated[DType, typer.Option("--dtype", help="compute: fp32, or bf16 autocast over the weights"
                                                         " (what run does on CUDA)")] = DType.fp32,
    weights_dtype: Annotated[WeightsDType, typer.Option("--weights-dtype", help="master weights' dtype (the"
                                                        " suite key weights_dtype)")] = WeightsDType.float32,
    gpu_memory_gb: Annotated[list[float] | None, typer.Option(
        "--gpu-memory-gb", help="GPU sizes to check, repeatable (default 24, 40, 80, 141)")] = None,
    wide: WideFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Plan peak training memory from the model's config alone (nothing loads): weights, method tensors,
    gradients, AdamW states and activations, and which GPU sizes each method fits."""
    from peftbench.memory import GB, MemorySettings, fit_options, plan_memory
    from peftbench.views import GPU_SIZES_GB, fit_lines, memory_view

    sizes = tuple(gpu_memory_gb or GPU_SIZES_GB)
    if any(not (size > 0 and math.isfinite(size)) for size in sizes):
        raise UserError("--gpu-memory-gb must be a positive number of GB, e.g. --gpu-memory-gb 80")
    specs = list(dict.fromkeys(method or ["full"]))
    common = dict(model=model, batch_size=batch_size, seq_len=seq_len, target_len=target_len,
                  weights_dtype=weights_dtype.value, autocast=dtype == DType.bf16,
                  gradient_checkpointing=gradient_checkpointing)
    plans = [plan_memory(MemorySettings(method=spec, **common)) for spec in specs]
    # A PEFT alternative for methods that train everything, planned at the same shape.
    peft = next((p for p in plans if p.trainable_params < p.total_params / 100), None)
    if peft is None and any(p.total > min(sizes) * GB for p in plans):
        peft = plan_memory(MemorySettings(method="lora", **common))
    if as_json:
        _print_json([{**plan.as_dict(), "fits": {f"{size:g}": plan.total <= size * GB for size in sizes},
                      "options": {f"{size:g}": fit_options(plan, size * GB, peft if peft is not plan else None)
                                  for size in sizes if plan.total > size * GB},
                      "shards_needed": {f"{size:g}": plan.shards_needed(size * GB) for size in sizes}}
                     for plan in plans])
        return
    out = _stdout()
    targets = "" if plans[0].family == "encoder" else f" + {target_len} target"
    out.print(f"{model} · micro-batch {batch_size} × {seq_len} input{targets} tokens · {weights_dtype.value}"
              f" weights · {'bf16 autocast' if dtype == DType.bf16 else 'fp32 compute'} · AdamW"
              f"{' · gradient checkpointing' if gradient_checkpointing else ''}", markup=False, highlight=False)
    _show(f"planned peak training memory of {model}", memory_view(plans), wide)
    for plan in plans:
        out.print(f"{plan.settings.method}:", markup=False, highlight=False)
        for line in fit_lines(plan, sizes, peft if peft is not plan else None):
            out.print(line, markup=False, highlight=False, soft_wrap=False)


@app.command()
def prices(wide: WideFlag = False, as_json: JsonFlag = False) -> None:
    """List the machine price table (USD per hour) used for budgets and costs; PEFTBENCH_PRICES replaces it."""
    from peftbench.prices import price_table
    from peftbench.views import prices_view

    table = price_table()
    if as_json:
        _print_json(table)
        return
    _show("machine prices (edit prices.yaml or set PEFTBENCH_PRICES)", prices_view(table), wide)


suites_app = typer.Typer(help="List the built-in suites, or print one to copy.", invoke_without_command=True,
                         no_args_is_help=False)
app.add_typer(suites_app, name="suites")


@suites_app.callback()
def suites(ctx: typer.Context, wide: WideFlag = False, as_json: JsonFlag = False) -> None:
    """List the built-in suites with their grids; `suites show NAME` prints one."""
    if ctx.invoked_subcommand is not None:
        return
    from peftbench.config import builtin_suites, load_suite
    from peftbench.views import suites_view

    loaded = {name: load_suite(name) for name in sorted(builtin_suites())}
    if as_json:
        _print_json([{"name": name, "description": s.description, "path": str(builtin_suites()[name]),
                      "models": s.models, "tasks": [str(t) for t in s.tasks], "methods": s.methods,
                      "scales": s.scales, "seeds": s.seeds} for name, s in loaded.items()])
        return
    _show("built-in suites", suites_view(loaded), wide)


@suites_app.command("show")
def suites_show(
    name: Annotated[str, typer.Argument(help="a built-in suite's name (or a suite file)")],
    as_json: JsonFlag = False,
) -> None:
    """Print a suite's file as it is, to read or to copy: `peftbench suites show quickstart > my.yaml`."""
    from peftbench.config import load_suite, suite_path

    path = suite_path(name)
    text = path.read_text(encoding="utf-8")
    if as_json:
        _print_json({"name": name, "path": str(path), "text": text, "suite": load_suite(name).model_dump()})
        return
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command()
def profile(
    model: Annotated[str, typer.Argument(help="model name, e.g. config:t5-large")],
    method: Annotated[list[str] | None, typer.Option("--method", help="method spec, repeatable")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="sequences per microbatch")] = 8,
    seq_len: Annotated[int, typer.Option("--seq-len", help="input tokens per sequence")] = 128,
    target_len: Annotated[int, typer.Option("--target-len", help="target tokens (text-to-text models)")] = 8,
    steps: Annotated[int, typer.Option("--steps", help="timed training steps and inference passes")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", help="untimed warm-up steps and passes first")] = 3,
    dtype: Annotated[DType | None, typer.Option(
        "--dtype", help="bf16: bf16 autocast over fp32 weights; default bf16 on CUDA and on CPUs that compute"
                        " bf16 natively (as `run` does), else fp32")] = None,
    random_init: Annotated[bool, typer.Option("--random-init", help="random weights, nothing read or downloaded"
                                                                    " but the config and tokenizer")] = False,
    no_reference: Annotated[bool, typer.Option("--no-reference", help="do not profile full tuning first")] = False,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing",
                                                         help="train with checkpointed layers")] = False,
    device: Annotated[Device, typer.Option("--device", help="where to measure")] = Device.auto,
    wide: WideFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Peak memory, train and inference tokens/s of each method on synthetic batches of one shape, each
    in a fresh process, as % of full tuning measured in the same call."""
    import time

    from peftbench.profile import ProfileSettings, default_dtype
    from peftbench.profile import profile as run_profile
    from peftbench.terminal import clock
    from peftbench.execution import pick_device
    from peftbench.views import profile_view

    chosen = pick_device(device.value).type
    settings = ProfileSettings(model=model, batch_size=batch_size, seq_len=seq_len, target_len=target_len,
                               steps=steps, warmup=warmup, random_init=random_init, device=chosen,
                               gradient_checkpointing=gradient_checkpointing,
                               dtype=dtype.value if dtype else default_dtype(chosen))
    console = Console(stderr=True)
    started = [time.monotonic()]
    talk = not as_json or console.is_terminal

    def starting(spec: str, index: int, total: int) -> None:
        started[0] = time.monotonic()
        if talk:
            console.print(f"profiling {index}/{total} {spec} in a fresh process ({warmup} warm-up + {steps} timed"
                          " steps, then inference) ...", markup=False, highlight=False)

    def finished(entry: dict) -> None:
        if talk:
            console.print(f"  {entry['method']}: {entry['status']} in {clock(time.monotonic() - started[0])}",
                          markup=False, highlight=False)

    result = run_profile(settings, list(method or []), reference=not no_reference, on_result=finished,
                         on_start=starting)
    if as_json:
        _print_json(result)
        return
    out = _stdout()
    targets = "" if result["family"] == "encoder" else f" + {target_len} target"
    out.print(f"{model} · batch {batch_size} × {seq_len} input{targets} tokens · {steps} timed steps"
              f" after {warmup} warm-up · {result['dtype']}{' · random init' if random_init else ''}",
              markup=False, highlight=False)
    out.print(f"device: {result['device']} · " + " ".join(f"{k} {v}" for k, v in (result["versions"] or {}).items()),
              markup=False, highlight=False)
    _show(f"profile of {model}", profile_view(result), wide)


def _error(message: str) -> None:
    Console(stderr=True, soft_wrap=True).print(message, markup=False, highlight=False)


def main() -> None:
    """Exit codes: 0 success, 2 a user mistake (one line, no traceback), 130 after Ctrl-C and 143 after
    SIGTERM, in every phase of every command."""
    from peftbench.interrupts import EXIT_CODES, Terminated, terminate

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        code = app(standalone_mode=False)  # typer returns 130 for a KeyboardInterrupt it caught
    except UserError as error:
        _error(f"error: {error}")
        code = 2
    except typer.Abort:
        code = EXIT_CODES[signal.SIGINT]
    except typer.TyperException as error:  # a bad flag or argument: typer's own usage errors
        _error(f"error: {error.format_message()} (see `peftbench --help`)")
        code = 2
    except KeyboardInterrupt:
        code = EXIT_CODES[signal.SIGINT]
    except Terminated:
        code = EXIT_CODES[signal.SIGTERM]
    finally:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:  # a handled stop ignores late signals to the end
            signal.signal(signal.SIGTERM, previous)
    if code in (EXIT_CODES[signal.SIGINT], EXIT_CODES[signal.SIGTERM]):
        _error("interrupted: stopped at once; a run in progress is stored as interrupted, and running the same"
               " command again resumes")
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
