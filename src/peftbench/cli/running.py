"""`peftbench run`: plan a suite, refuse what cannot fit, run the grid into the store, write its summary."""

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from peftbench.cli.common import (DEFAULT_STORE, Device, ExecutorKind, JsonFlag, StoreOption, WideFlag, app,
                                  print_json, show_tables, stdout_console, summary_path, writable_folder)
from peftbench.errors import UserError


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
    no_memory_plan: Annotated[bool, typer.Option(
        "--no-memory-plan", help="dry run: skip each run's memory plan (seconds per model x method on an 11B"
                                 " model)")] = False,
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
    from peftbench.execution import pick_device
    from peftbench.executors import LocalExecutor, ray_executor
    from peftbench.flag_grids import check_name, derived_name, file_task_flags, within
    from peftbench.interrupts import exit_code, ignore_further_signals
    from peftbench.memory_grids import device_target, refuse_unfit
    from peftbench.planning import Overrides, plan
    from peftbench.progress import GridProgress
    from peftbench.recording import complete
    from peftbench.report import summary_markdown
    from peftbench.runner import GridInterrupted, lease_seconds
    from peftbench.sharding import refuse_unplaceable
    from peftbench.store import Store, read_rows
    from peftbench.suite_files import load_suite

    tasks = file_task_flags(task, test_file, {"text": text_field, "label": label_field, "input": input_field,
                                              "target": target_field})
    overrides = Overrides(models=model, tasks=tasks, methods=method, scales=scale, seeds=seed)
    if name:
        check_name(name)
    if not dry_run:
        writable_folder(out or store.parent, "--out" if out else "the store's folder")
        lease_seconds()  # a bad PEFTBENCH_LEASE_SECONDS is refused before anything loads
    base = load_suite(suite, settings or [])
    grid = plan(base, overrides, load_data=not dry_run)
    # Runs are filed under a name: the suite's while the flags only pick part of it, else one made of the axes.
    filed_as = name or (base.name if within(grid.suite, base) else derived_name(grid.suite))
    grid.suite = grid.suite.model_copy(update={"name": filed_as})
    chosen_device = pick_device(device.value)
    target = device_target(chosen_device, gpu_memory_gb)
    if dry_run:
        _print_grid(grid, read_rows(store), chosen_device, target, as_json, plan_memory=not no_memory_plan)
        return
    if target.kind == "cuda":  # a run that cannot fit is refused before any weights load or the store opens
        refuse_unfit(grid, target)
    if executor == ExecutorKind.local:
        refuse_unplaceable(grid, chosen_device)
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
    suite_rows = complete([row for row in read_rows(store) if row["suite"] == filed_as or row["run_id"] in ids])
    summary = summary_path(out or store.parent, filed_as, store)
    try:
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(summary_markdown(suite_rows, f"peftbench suite {filed_as}", store), encoding="utf-8")
    except OSError as error:
        raise UserError(f"the runs are stored, but the summary '{summary}' cannot be written ({error.strerror});"
                        " free space or pass --out FOLDER, then run the same command again") from None
    if as_json:
        from peftbench.configurations import learning_of_runs, random_weights

        learning = learning_of_runs(rows)
        print_json({"suite": filed_as, "counts": counts, "store": str(store), "summary": str(summary),
                     "runs": [{**row, "random_weights": random_weights(row["model"]),
                               "learning": learning.get(row["run_id"])} for row in rows]})
        return
    from peftbench.report.config_view import config_views

    show_tables(f"suite {filed_as}: {len(rows)} runs", config_views(rows), wide)
    stdout_console().print(f"trained {counts.get('finished', 0)}, skipped {counts.get('skipped', 0)} already stored,"
                    f" failed {counts.get('failed', 0)}; store {store}; summary {summary} (every run of"
                    f" '{filed_as}' in the store)", markup=False, highlight=False)


def _print_grid(grid, stored: list[dict], device, target, as_json: bool, plan_memory: bool) -> None:
    from peftbench.views import dry_run_view

    data, lines = dry_run_view(grid, stored, device, target, plan_memory)
    if as_json:
        print_json(data)
        return
    console = stdout_console()
    for line in lines:
        console.print(Text(line))
