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


def _stdout() -> Console:
    """Rich console for tables: wide when piped to a file, so columns are not cut to 80 characters."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def _print_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*map(Text, row))  # Text: method specs' brackets are not rich markup
    _stdout().print(table)


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


@app.command()
def run(
    suite: Annotated[str, typer.Argument(help="suite file or built-in suite name")] = "quickstart",
    model: Annotated[list[str] | None, typer.Option("--model", help="replace the suite's models")] = None,
    task: Annotated[list[str] | None, typer.Option("--task", help="replace the suite's tasks")] = None,
    method: Annotated[list[str] | None, typer.Option("--method", help="replace the suite's methods")] = None,
    scale: Annotated[list[str] | None, typer.Option("--scale", help="replace the suite's scales")] = None,
    seed: Annotated[list[int] | None, typer.Option("--seed", help="replace the suite's seeds")] = None,
    store: StoreOption = DEFAULT_STORE,
    out: Annotated[Path | None, typer.Option("--out", help="where the Markdown summary goes")] = None,
    device: Annotated[Device, typer.Option("--device", help="where to train")] = Device.auto,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the expanded grid, train nothing")] = False,
    executor: Annotated[ExecutorKind, typer.Option("--executor", help="run here one at a time, or as Ray tasks")]
    = ExecutorKind.local,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="join this Ray cluster (e.g. auto or HOST:6379); default: start a local one")] = None,
    gpus_per_run: Annotated[float | None, typer.Option(
        "--gpus-per-run", min=0, help="GPUs per Ray task; default 1 if the cluster has GPUs, else 0")] = None,
    cpus_per_run: Annotated[float, typer.Option("--cpus-per-run", min=0, help="CPUs per Ray task")] = 1,
    as_json: JsonFlag = False,
) -> None:
    """Train, evaluate and store every run of a suite (the offline quickstart by default)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from peftbench.api import run_plan
    from peftbench.config import load_suite
    from peftbench.executors import LocalExecutor, ray_executor
    from peftbench.interrupts import exit_code, ignore_further_signals
    from peftbench.report import runs_view, summary_markdown
    from peftbench.runner import GridInterrupted, Overrides, lease_seconds, pick_device, plan
    from peftbench.store import Store

    overrides = Overrides(models=model, tasks=task, methods=method, scales=scale, seeds=seed)
    if not dry_run:
        _writable_folder(out or store.parent, "--out" if out else "the store's folder")
        lease_seconds()  # a bad PEFTBENCH_LEASE_SECONDS is refused before anything loads
    grid = plan(load_suite(suite), overrides, load_data=not dry_run)
    if dry_run:
        _print_grid(grid, as_json)
        return
    if ray_address and executor != ExecutorKind.ray:
        raise UserError("--ray-address needs --executor ray")
    if executor == ExecutorKind.ray:
        runs_on = ray_executor(ray_address, device.value, cpus_per_run, gpus_per_run)
    else:
        runs_on = contextlib.nullcontext(LocalExecutor(pick_device(device.value)))
    opened = Store(store)  # a damaged or unwritable store is refused before the progress display starts
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    try:
        with runs_on as chosen, Progress(*columns, console=console, transient=True) as progress:
            done = run_plan(grid, opened, chosen, progress)
    except GridInterrupted as stop:
        ignore_further_signals()
        console.print(str(stop), markup=False, highlight=False, soft_wrap=True)
        sys.exit(exit_code())
    finally:
        opened.close()
    counts, rows = done.counts, done.rows
    summary = (out or store.parent) / f"{grid.suite.name}.md"
    try:
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(summary_markdown(rows, f"peftbench suite {grid.suite.name}"), encoding="utf-8")
    except OSError as error:
        raise UserError(f"the runs are stored, but the summary '{summary}' cannot be written ({error.strerror});"
                        " free space or pass --out FOLDER, then run the same command again") from None
    if as_json:
        _print_json({"suite": grid.suite.name, "counts": counts, "store": str(store), "summary": str(summary),
                     "runs": rows})
        return
    _stdout().print(runs_view(rows, f"suite {grid.suite.name}"))
    _stdout().print(f"trained {counts.get('finished', 0)}, skipped {counts.get('skipped', 0)} already stored,"
                    f" failed {counts.get('failed', 0)}; store {store}; summary {summary}")


def _print_grid(grid, as_json: bool) -> None:
    """A dry run's grid: the runs, then the seeds that wait for their sweep to choose an LR. Hub tasks are
    not downloaded for it, so their runs show the scale's nominal size (n<=N) and no final id."""
    waiting = [{**f.template, "lr": "chosen by sweep", "seed": seed, "kind": "train"}
               for f in grid.follow_ups for seed in f.sweep["seeds"][1:]]
    runs = [{"run_id": r.run_id if r.spec["task"] in grid.splits else None, "kind": r.kind, **r.spec}
            for r in grid.runs]
    if as_json:
        _print_json({"suite": grid.suite.name, "size": grid.size, "runs": runs, "after_sweep": waiting})
        return
    console = _stdout()
    for r in grid.runs:
        n = r.spec["n_train"]
        size = f"n={n}" if r.spec["task"] in grid.splits else f"n<={n}" if n else "n=all"
        run_id = r.run_id if r.spec["task"] in grid.splits else "(after download)"
        lr = f" · lr {r.spec['lr']:g}" if "lr" in r.spec else ""
        console.print(Text(f"{run_id:16}  {r.kind:8}  {r.spec['model']} · {r.spec['task']} · "
                           f"{r.spec['method_spec']} · {size} · seed {r.spec['seed']}{lr}"))
    for w in waiting:
        console.print(Text(f"{'(after sweep)':16}  train     {w['model']} · {w['task']} · {w['method_spec']} · "
                           f"seed {w['seed']} · lr chosen by the sweep ({w['sweep']['select_by']})"))
    console.print(f"{grid.size} runs in suite '{grid.suite.name}'"
                  + (f" ({len(waiting)} wait for their sweep)" if waiting else ""))


RESULT_FIELDS = ("run_id", "kind", "suite", "model", "task", "method", "method_spec", "method_options", "scale",
                 "n_train", "seed", "lr", "status", "attempts", "error", "primary_metric", "score", "metrics", "trainable_params",
                 "total_params", "peak_memory_bytes", "peak_memory_kind", "train_tokens_per_s", "infer_tokens_per_s",
                 "wall_s", "train_seconds", "best_epoch", "best_val_loss", "seconds_to_best", "stopped_by", "steps",
                 "cost_usd", "budget", "sweep", "val_score", "curve", "cpu_bf16", "precision", "flops", "train_flops_per_s",
                 "infer_flops_per_s", "train_mfu", "infer_mfu", "peak_flops_per_s", "peak_source", "family", "weights",
                 "weights_skipped", "provenance")


@app.command()
def results(
    store: StoreOption = DEFAULT_STORE,
    baselines: Annotated[bool, typer.Option("--baselines", help="include majority and zero-shot rows")] = False,
    suite: Annotated[str | None, typer.Option("--suite", help="only runs of this suite")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List stored runs (training runs; --baselines adds the baseline rows)."""
    from peftbench.report import runs_view
    from peftbench.store import read_rows, require_store

    require_store(store)
    rows = [row for row in read_rows(store) if (baselines or row["kind"] == "train")
            and (suite is None or row["suite"] == suite)]
    if as_json:
        _print_json([{key: row.get(key) for key in RESULT_FIELDS} for row in rows])
        return
    _stdout().print(runs_view(rows, f"{len(rows)} runs in {store}"))


@app.command()
def report(
    store: StoreOption = DEFAULT_STORE,
    out: Annotated[Path, typer.Option("--out", help="directory for the report")] = Path("peftbench-report"),
    formats: Annotated[str, typer.Option("--format", help="comma-separated: md, csv, tex, html")] = "md,csv,tex,html",
    suite: Annotated[str | None, typer.Option("--suite", help="only runs of this suite")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Tables (scores, ablations, convergence, per-parameter and per-minute scores, efficiency, cost,
    predictions), statistics over seeds and plots, from the runs in a store."""
    from peftbench import report as report_
    from peftbench.store import read_rows, require_store

    chosen = report_.parse_formats(formats)
    require_store(store)
    rows = [row for row in read_rows(store) if suite is None or row["suite"] == suite]
    if not rows:
        raise UserError(f"the store '{store}' holds no runs" + (f" of suite '{suite}'" if suite else "")
                        + "; check --suite against `peftbench results`")
    built = report_.build(rows, f"peftbench report: {suite or store}")
    written = report_.write(built, out, chosen)
    if as_json:
        _print_json({"out": str(out), "files": [str(path) for path in written],
                     "tables": [table.key for table in built.tables], "notes": built.intro})
        return
    _stdout().print(f"{len(built.tables)} tables from {len(rows)} runs; wrote {len(written)} files under {out}")


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="a run id (or a unique prefix of one), as `results` lists them")],
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonFlag = False,
) -> None:
    """One run: its spec, metrics, loss curve and saved files."""
    from peftbench.api import find_run

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
    learning_rate = f" · lr {row['lr']:g}" if "lr" in row else ""
    say(f"  {row['model']} · {row['task']} · {row['method_spec']} · n={row['n_train']} · seed {row['seed']}"
        + learning_rate)
    if row.get("error"):
        say(f"  error: {row['error']}")
    if row.get("score") is not None:
        metrics = {k: v for k, v in row.get("metrics", {}).items() if isinstance(v, (int, float))}
        say(f"  {row['primary_metric']} {row['score']:.4f}; " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
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
                                                     "final_factor", "cpu_bf16", "bf16_autocast")}
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
    from peftbench.store import read_rows

    answer = rank(read_rows(store), task_type.value, train_samples, priority.value,
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
def methods(as_json: JsonFlag = False) -> None:
    """List the fine-tuning methods, their options and learning-rate defaults."""
    from peftbench.methods import METHODS

    entries = [{"name": name, "summary": m.summary, "options": {k: str(f.default) for k, f in m.options.model_fields.items()},
                "default_lr": m.default_lr, "peak_factor": m.peak_factor, "final_factor": m.final_factor,
                "mergeable": m.mergeable, "identity_init": m.identity_init, "text_to_text_only": m.text_to_text_only,
                "source": m.source} for name, m in METHODS.items()]
    if as_json:
        _print_json(entries)
        return
    _print_table("methods", ("name", "options", "lr (peak x, final x)", "mergeable", "summary"), [
        (e["name"], ", ".join(f"{k}={v}" for k, v in e["options"].items()) or "–",
         f"{e['default_lr']:g} ({e['peak_factor']:g}x, {e['final_factor']:g}x)", "yes" if e["mergeable"] else "no",
         e["summary"]) for e in entries])


@app.command()
def tasks(as_json: JsonFlag = False) -> None:
    """List the built-in tasks (and how to use your own data with file:PATH)."""
    from peftbench.tasks import TASKS

    entries = [{"name": name, "kind": t.kind, "labels": t.labels, "primary_metric": t.primary_metric,
                "source": t.source, "description": t.description, "template": t.template} for name, t in TASKS.items()]
    if as_json:
        _print_json(entries)
        return
    _print_table("tasks (also file:PATH with text+label or input+target columns)",
                 ("name", "kind", "metric", "labels", "source"),
                 [(e["name"], e["kind"], e["primary_metric"], ", ".join(e["labels"]) or "–", e["source"]) for e in entries])


def _at_budget(row: dict) -> str:
    """AdaLoRA starts at init_r and prunes to its budget: both counts."""
    budget = row["trainable_at_budget"]
    return "" if budget is None else f" ({budget:,} at budget)"


@app.command()
def params(
    model: Annotated[str, typer.Argument(help="model name, e.g. config:flan-t5-xl")],
    method: Annotated[list[str] | None, typer.Option("--method", help="method spec, repeatable")] = None,
    suite: Annotated[str | None, typer.Option("--suite", help="count every method spec of this suite")] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed for layers=random draws")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Count parameters per method on the meta device: total, trainable, added, changed after merge, and
    the adapter checkpoint size, each also as % of the base model."""
    from peftbench.accounting import count
    from peftbench.config import load_suite

    specs = list(method or [])
    if suite:
        specs += load_suite(suite).methods
    if not specs:
        raise UserError("name at least one method (--method lora) or a suite (--suite pu2023)")
    rows = [count(model, spec, seed).as_row() for spec in dict.fromkeys(specs)]
    if as_json:
        _print_json(rows)
        return
    _print_table(f"parameters of {model} ({rows[0]['total']:,} in the base model)",
                 ("spec", "trainable", "%", "added", "%", "changed after merge", "%", "adapter bytes"),
                 [(r["spec"], f"{r['trainable']:,}" + _at_budget(r), f"{r['trainable_pct']:.4f}", f"{r['added']:,}",
                   f"{r['added_pct']:.4f}", f"{r['changed']:,}" + ("" if r["mergeable"] else " (no merge)"),
                   f"{r['changed_pct']:.2f}", f"{r['adapter_bytes']:,}") for r in rows])


@app.command()
def prices(as_json: JsonFlag = False) -> None:
    """List the machine price table (USD per hour) used for budgets and costs; PEFTBENCH_PRICES replaces it."""
    from peftbench.prices import price_table

    table = price_table()
    if as_json:
        _print_json(table)
        return
    _print_table("machine prices (edit prices.yaml or set PEFTBENCH_PRICES)", ("name", "USD/hour", "$1 buys", "source"),
                 [(name, f"{entry['usd_per_hour']:.4f}", f"{3600 / entry['usd_per_hour']:,.0f} s",
                   " ".join(str(entry.get("source", "")).split())) for name, entry in table.items()])


class DType(str, Enum):
    bf16 = "bf16"
    fp32 = "fp32"


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**20:,.1f}"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _mfu(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2g}%"


def _pct(entry: dict, field: str) -> str:
    value = (entry.get("pct_of_full") or {}).get(field)
    return "–" if value is None else f"{value:.0f}%"


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
    device: Annotated[Device, typer.Option("--device", help="where to measure")] = Device.auto,
    as_json: JsonFlag = False,
) -> None:
    """Peak memory, train and inference tokens/s of each method on synthetic batches of one shape, each
    in a fresh process, as % of full tuning measured in the same call."""
    from peftbench.profile import ProfileSettings, default_dtype
    from peftbench.profile import profile as run_profile
    from peftbench.runner import pick_device

    chosen = pick_device(device.value).type
    settings = ProfileSettings(model=model, batch_size=batch_size, seq_len=seq_len, target_len=target_len,
                               steps=steps, warmup=warmup, random_init=random_init, device=chosen,
                               dtype=dtype.value if dtype else default_dtype(chosen))
    console = Console(stderr=True)

    def report(entry: dict) -> None:
        console.print(f"profiled {entry['method']}: {entry['status']}", markup=False, highlight=False)

    result = run_profile(settings, list(method or []), reference=not no_reference, on_result=report)
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
    rows = []
    for entry in result["methods"]:
        if entry["status"] != "ok":
            rows.append((entry["method"], entry["status"].upper(), *["–"] * 11, entry.get("error", "")))
            continue
        rows.append((entry["method"], "ok", f"{entry['trainable_params']:,}", _mib(entry["peak_memory_bytes"]),
                     _pct(entry, "peak_memory_bytes"), _rate(entry["train_tokens_per_s"]),
                     _pct(entry, "train_tokens_per_s"), _mfu(entry.get("train_mfu")), _rate(entry["infer_tokens_per_s"]),
                     _pct(entry, "infer_tokens_per_s"), _mfu(entry.get("infer_mfu")),
                     _rate(entry["infer_merged_tokens_per_s"]), _pct(entry, "infer_merged_tokens_per_s"), ""))
    kind = next((e["peak_memory_kind"] for e in result["methods"] if e["status"] == "ok"), "")
    peak = next((e.get("peak_source") for e in result["methods"] if e["status"] == "ok"), None)
    _print_table(f"profile of {model} (% of full tuning; peak memory: {kind}; MFU against the {peak or 'unknown peak'})",
                 ("method", "status", "trainable", "peak MiB", "%", "train tok/s", "%", "MFU", "infer tok/s", "%",
                  "MFU", "merged infer tok/s", "%", "error"), rows)


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
