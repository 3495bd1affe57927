"""Commands that read the results store: `results`, `report`, `show`, `export`, `recommend`."""

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from peftbench.cli.common import (DEFAULT_STORE, JsonFlag, StoreOption, WideFlag, app, print_json, show_tables,
                                  stdout_console, writable_folder, written_whole)
from peftbench.errors import UserError


RESULT_FIELDS = ("run_id", "kind", "suite", "model", "task", "method", "method_spec", "method_options", "scale",
                 "n_train", "seed", "lr", "peak_lr", "status", "attempts", "error", "primary_metric", "score", "metrics",
                 "trainable_params", "total_params", "peak_memory_bytes", "peak_memory_kind", "train_tokens_per_s",
                 "infer_tokens_per_s", "wall_s", "train_seconds", "best_epoch", "best_val_loss", "seconds_to_best",
                 "stopped_by", "steps", "cost_usd", "budget", "sweep", "val_score", "curve", "cpu_bf16", "precision",
                 "flops", "train_flops_per_s", "infer_flops_per_s", "train_mfu", "infer_mfu", "peak_flops_per_s",
                 "peak_source", "family", "weights", "weights_skipped", "random_weights", "gradient_checkpointing",
                 "sharding", "ranks", "schema_version", "provenance", "learning")


def _result_json(row: dict, learning: dict[str, dict]) -> dict:
    """A stored run as `results --json` gives it: with the peak learning rate, the random-weights flag and its
    configuration's verdict on whether it learned (None for a baseline or an unfinished run)."""
    from peftbench.configurations import random_weights

    lr, peak = row.get("lr"), row.get("peak_factor")
    extra = {"peak_lr": lr * peak if lr is not None and peak is not None else None,
             "random_weights": random_weights(row["model"]), "learning": learning.get(row["run_id"])}
    return {key: extra[key] if key in extra else row.get(key) for key in RESULT_FIELDS}


@app.command()
def results(
    store: StoreOption = DEFAULT_STORE,
    seeds: Annotated[bool, typer.Option("--seeds", help="one row per run (seed) with its id, instead of one per"
                                        " configuration")] = False,
    baselines: Annotated[bool, typer.Option("--baselines", help="with --seeds or --json: include the majority and"
                                            " zero-shot rows (one row per configuration always shows them)")] = False,
    suite: Annotated[str | None, typer.Option("--suite", help="only runs of this suite")] = None,
    wide: WideFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Stored results: per model, task and data size one row per configuration (mean ± std over its seeds,
    baselines included, best first, whether it learned); --seeds lists the runs; --json every run."""
    from peftbench.configurations import learning_of_runs
    from peftbench.report.config_view import config_views
    from peftbench.report.runs import runs_views
    from peftbench.store import read_rows, require_store

    require_store(store)
    rows = [row for row in read_rows(store) if suite is None or row["suite"] == suite]
    listed = [row for row in rows if baselines or row["kind"] == "train"]
    if as_json:
        learning = learning_of_runs(rows)
        print_json([_result_json(row, learning) for row in listed])
    elif seeds:
        show_tables(f"{len(listed)} runs in {store}", runs_views(listed), wide)
    else:
        views = config_views(rows)
        show_tables(f"{sum(len(lines) for _, _, lines, _ in views)} configurations of {len(rows)} runs in {store}",
                    views, wide)


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
    from peftbench.recording import complete
    from peftbench.store import read_rows, require_store

    chosen = report_.parse_formats(formats)
    writable_folder(out, "--out")  # before the report is built, not after
    require_store(store)
    rows = complete([row for row in read_rows(store) if suite is None or row["suite"] == suite])
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
    with written_whole(out, "--out") as staging:
        written = [out / path.relative_to(staging) for path in report_.write(built, staging, chosen, say)]
    if as_json:
        print_json({"out": str(out), "files": [str(path) for path in written],
                     "tables": [table.key for table in built.tables], "notes": built.intro})
        return
    page = out / "report.html"
    lead = f"open {page} in a browser (the summary comes first); " if "html" in chosen else ""
    others = sorted({path.relative_to(out).parts[0] + ("/" if len(path.relative_to(out).parts) > 1 else "")
                     for path in written if path != page})
    listed = f" ({', '.join(others)})" if others else ""
    stdout_console().print(f"{lead}wrote {len(written)} file{'s' * (len(written) != 1)} under {out}{listed};"
                    f" {len(built.tables)} tables from {len(rows)} runs", markup=False, highlight=False,
                    soft_wrap=True)  # a path is never broken at the console's width


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="a run id (or a unique prefix of one), as `results` lists them")],
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonFlag = False,
) -> None:
    """One run: its spec, metrics, loss curve and saved files."""
    from peftbench.store import find_run, read_history
    from peftbench.configurations import fmt_lr, random_weights

    row = find_run(run_id, store)
    weights = row.get("weights")
    folder = store.parent / weights["folder"] if weights else None
    files = {"folder": str(folder), "present": folder.is_dir(), **weights} if weights else None
    history = read_history(store, row["run_id"])
    if as_json:
        print_json({**row, "saved": files, "history": history})
        return
    out = stdout_console()
    say = lambda text: out.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    say(f"run {row['run_id']} ({row['kind']}, {row['status']}, {row.get('attempts', 1)} attempt(s)) of suite"
        f" {row['suite']}")
    learning_rate = (f" · lr {fmt_lr(row['lr'])} → peak {fmt_lr(row['lr'] * row.get('peak_factor', 1))}"
                     if "lr" in row else "")
    say(f"  {row['model']} · {row['task']} · {row['method_spec']} · n={row['n_train']} · seed {row['seed']}"
        + learning_rate)
    if row.get("error"):
        say(f"  error: {row['error']}")
    for earlier in history:  # results this run had before `run --rerun` trained it again
        say(f"  superseded ({earlier['reason']}): {earlier['status']}, score {earlier.get('score')}")
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

    with written_whole(out, "--out", empty=True) as staging:
        done = {**write_export(run_id, store, staging, merged, final=out), "out": str(out)}
    if as_json:
        print_json(done)
        return
    stdout_console().print(f"exported run {done['run_id']} as {done['format']} to {done['out']}: {', '.join(done['files'])}",
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
    task_type: Annotated[TaskType | None, typer.Option("--task-type", help="what the task asks for (default: what"
                                                       " the runs chosen by --task etc. are)")] = None,
    train_samples: Annotated[int | None, typer.Option("--train-samples", min=1, help="training examples you have"
                                                      " (default: the runs chosen by --scale etc., if one size)")]
    = None,
    priority: Annotated[Priority, typer.Option("--priority", help="what to optimise")] = Priority.performance,
    max_memory_gb: Annotated[float | None, typer.Option("--max-memory-gb", min=0, help="exclude methods whose"
                                                        " measured peak memory exceeds this")] = None,
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", min=0, help="exclude methods whose runs"
                                                      " took longer")] = None,
    max_usd: Annotated[float | None, typer.Option("--max-usd", min=0, help="exclude methods whose runs cost"
                                                  " more (or have no known price)")] = None,
    task: Annotated[str | None, typer.Option("--task", help="only runs of this task")] = None,
    model: Annotated[str | None, typer.Option("--model", help="only runs of this model")] = None,
    scale: Annotated[str | None, typer.Option("--scale", help="only runs of this scale (as the suite names it,"
                                              " e.g. low or 100, or a number of training examples)")] = None,
    suite: Annotated[str | None, typer.Option("--suite", help="only runs of this suite")] = None,
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonFlag = False,
) -> None:
    """Rank methods for a task: from the store's measurements at a nearby data size when it has them (methods
    compared on the blocks every one of them ran on; one that did not learn is never recommended), otherwise
    from the papers' findings, each cited. Without a store it says so in one line and gives the papers'
    ranking; --task, --model, --scale and --suite need a store."""
    from peftbench.recommend import Limits, Scope, from_priors
    from peftbench.recommend import recommend as rank
    from peftbench.recording import read_results
    from peftbench.store import require_store

    scope = Scope(task, model, scale, suite)
    limits = Limits(max_memory_gb, max_minutes, max_usd)
    kind = task_type.value if task_type else None
    rows = read_results(store)  # an absent store has none; a path that cannot be a store is refused
    if store.exists():
        answer = rank(rows, kind, train_samples, priority.value, limits, scope)
    else:
        if scope.flags():
            require_store(store)
        if kind is None or train_samples is None:
            raise UserError(f"--task-type and --train-samples are needed: there is no results store at '{store}'"
                            " to take them from")
        answer = from_priors(kind, train_samples, priority.value, limits)
        answer.notes.insert(0, f"There is no results store at '{store}', so this ranking comes from the papers,"
                               " not from measurements (`peftbench run` measures your own; --store PATH reads"
                               " another store).")
    if as_json:
        print_json(answer.as_dict())
        return
    console = stdout_console()
    say = lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    chosen = "".join(f", {flag} {value}" for flag, value in answer.scope.items())
    say(f"{answer.task_type}, {answer.train_samples} training examples, priority {answer.priority}{chosen}:"
        f" ranked from {answer.source.upper()}")
    say(answer.notes[0])  # where the ranking comes from, and why
    for place, choice in enumerate(answer.ranking, 1):
        say(f"{place}. {choice.method}")
        for reason in choice.reasons:
            say(f"   - {reason}")
        for source in dict.fromkeys(choice.sources):
            say(f"   source: {source}")
        if choice.evidence:
            shown = ", ".join(choice.evidence[:6]) + (" ..." if len(choice.evidence) > 6 else "")
            say(f"   evidence: {len(choice.evidence)} runs ({shown})")
    for item in answer.excluded:
        say(f"excluded {item['method']}: {item['reason']}")
    for note in answer.notes[1:]:
        say(f"note: {note}")
