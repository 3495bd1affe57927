"""`peftbench run` and `peftbench tune`: plan a suite (tune: a study per method and block), refuse what cannot fit,
run the grid into the store, write its summary."""

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.text import Text

from peftbench.cli.common import (DEFAULT_STORE, Device, ExecutorKind, JsonFlag, StoreOption, WideFlag, app,
                                  print_json, show_tables, stdout_console, summary_path, writable_folder)
from peftbench.terminal import print_table
from peftbench.errors import EXIT_RUNS_FAILED, UserError

if TYPE_CHECKING:
    from peftbench.planning import Plan


SuiteArgument = Annotated[str, typer.Argument(help="suite file or built-in suite name")]
ModelOption = Annotated[list[str] | None, typer.Option("--model", help="replace the suite's models")]
TaskOption = Annotated[list[str] | None, typer.Option("--task", help="replace the suite's tasks (file:PATH for your"
                                                                     " own JSONL/CSV)")]
MethodOption = Annotated[list[str] | None, typer.Option("--method", help="replace the suite's methods")]
ScaleOption = Annotated[list[str] | None, typer.Option("--scale", help="replace the suite's scales")]
SeedOption = Annotated[list[int] | None, typer.Option("--seed", help="replace the suite's seeds")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="set any suite key, validated like the YAML:"
                                                     " --set epochs=3 --set learning_rates.lora=1e-3")]
NameOption = Annotated[str | None, typer.Option("--name", help="file the runs under this name (default: the suite's,"
                                                " or one made of the axes when flags take the grid outside it)")]
TestFileOption = Annotated[str | None, typer.Option("--test-file", help="held-out test file for the --task file:")]
AllowOverlapFlag = Annotated[bool, typer.Option("--allow-overlap", help="let the --test-file share inputs with the"
                                                " training file (refused by default; the plan prints the counts)")]
TextFieldOption = Annotated[str | None, typer.Option("--text-field", help="the file's text column")]
LabelFieldOption = Annotated[str | None, typer.Option("--label-field", help="the file's label column")]
InputFieldOption = Annotated[str | None, typer.Option("--input-field", help="generation: the input column")]
TargetFieldOption = Annotated[str | None, typer.Option("--target-field", help="generation: the target column")]
OutOption = Annotated[Path | None, typer.Option("--out", help="where the Markdown summary goes")]
DeviceOption = Annotated[Device, typer.Option("--device", help="where to train")]
DryRunFlag = Annotated[bool, typer.Option("--dry-run", help="print the expanded grid and its estimated time, train"
                                          " nothing")]
NoMemoryPlanFlag = Annotated[bool, typer.Option("--no-memory-plan", help="dry run: skip each run's memory plan"
                                                " (seconds per model x method on an 11B model)")]
ExecutorOption = Annotated[ExecutorKind, typer.Option("--executor", help="run here one at a time, or as Ray tasks")]
RayAddressOption = Annotated[str | None, typer.Option(
    "--ray-address", help="join this Ray cluster (e.g. auto or HOST:6379); default: start a local one")]
GpusPerRunOption = Annotated[float | None, typer.Option(
    "--gpus-per-run", min=0, help="GPUs per Ray task; default 1 if the cluster has GPUs, else 0")]
CpusPerRunOption = Annotated[float, typer.Option("--cpus-per-run", min=0, help="CPUs per Ray task")]
RerunOption = Annotated[list[str] | None, typer.Option(
    "--rerun", help="train these stored runs of the grid again (RUN_ID or a unique prefix, repeatable); their"
                    " earlier results are kept as superseded history")]
GpuMemoryOption = Annotated[float | None, typer.Option(
    "--gpu-memory-gb", help="plan memory for a GPU of this many GB (another machine); a real run then refuses runs"
                            " that would not fit it")]


@dataclass
class GridFlags:
    """What `run` and `tune` take alike: the suite, the flags that change its grid, and where and how it runs."""

    suite: str
    model: list[str] | None
    task: list[str] | None
    method: list[str] | None
    scale: list[str] | None
    seed: list[int] | None
    settings: list[str] | None
    name: str | None
    test_file: str | None
    fields: dict[str, str | None]
    allow_overlap: bool
    store: Path
    out: Path | None
    device: Device
    dry_run: bool
    no_memory_plan: bool
    executor: ExecutorKind
    ray_address: str | None
    gpus_per_run: float | None
    cpus_per_run: float
    gpu_memory_gb: float | None
    wide: bool
    as_json: bool
    rerun: list[str] | None = None


@app.command()
def run(
    suite: SuiteArgument = "quickstart", model: ModelOption = None, task: TaskOption = None,
    method: MethodOption = None, scale: ScaleOption = None, seed: SeedOption = None, settings: SetOption = None,
    name: NameOption = None, test_file: TestFileOption = None, allow_overlap: AllowOverlapFlag = False,
    text_field: TextFieldOption = None, label_field: LabelFieldOption = None, input_field: InputFieldOption = None,
    target_field: TargetFieldOption = None, store: StoreOption = DEFAULT_STORE, out: OutOption = None,
    device: DeviceOption = Device.auto, dry_run: DryRunFlag = False, no_memory_plan: NoMemoryPlanFlag = False,
    executor: ExecutorOption = ExecutorKind.local, ray_address: RayAddressOption = None,
    gpus_per_run: GpusPerRunOption = None, cpus_per_run: CpusPerRunOption = 1, gpu_memory_gb: GpuMemoryOption = None,
    wide: WideFlag = False, as_json: JsonFlag = False, rerun: RerunOption = None,
) -> None:
    """Train, evaluate and store every run of a suite (the offline quickstart by default)."""
    fields = {"text": text_field, "label": label_field, "input": input_field, "target": target_field}
    flags = GridFlags(suite, model, task, method, scale, seed, settings, name, test_file, fields, allow_overlap, store,
                      out, device, dry_run, no_memory_plan, executor, ray_address, gpus_per_run, cpus_per_run,
                      gpu_memory_gb, wide, as_json, rerun)
    done = _run_grid(flags)
    if done is None:
        return
    grid, counts, rows, summary = done
    filed_as = grid.suite.name
    if as_json:
        from peftbench.configurations import learning_of_runs, random_weights

        learning = learning_of_runs(rows)
        print_json({"suite": filed_as, "counts": counts, "store": str(store), "summary": str(summary),
                     "runs": [{**row, "random_weights": random_weights(row["model"]),
                               "learning": learning.get(row["run_id"])} for row in rows]})
        _exit_on_failures(counts)
        return
    from peftbench.report.config_view import config_views

    show_tables(f"suite {filed_as}: {len(rows)} runs", config_views(rows), wide)
    _say_counts(filed_as, counts, store, summary)
    _exit_on_failures(counts)


@app.command()
def tune(
    suite: SuiteArgument = "quickstart",
    trials: Annotated[int | None, typer.Option("--trials", min=1, help="trials per method and block (default: the"
                                               " suite's tune.trials, else 8)")] = None,
    model: ModelOption = None, task: TaskOption = None, method: MethodOption = None, scale: ScaleOption = None,
    seed: SeedOption = None, settings: SetOption = None, name: NameOption = None, test_file: TestFileOption = None,
    allow_overlap: AllowOverlapFlag = False, text_field: TextFieldOption = None, label_field: LabelFieldOption = None,
    input_field: InputFieldOption = None, target_field: TargetFieldOption = None, store: StoreOption = DEFAULT_STORE,
    out: OutOption = None, device: DeviceOption = Device.auto, dry_run: DryRunFlag = False,
    no_memory_plan: NoMemoryPlanFlag = False, executor: ExecutorOption = ExecutorKind.local,
    ray_address: RayAddressOption = None, gpus_per_run: GpusPerRunOption = None, cpus_per_run: CpusPerRunOption = 1,
    gpu_memory_gb: GpuMemoryOption = None, wide: WideFlag = False, as_json: JsonFlag = False,
) -> None:
    """Tune every method of a suite with the same budget: per model, task, scale and method, the same number of
    trials (trial 0 at the defaults, then Optuna's seeded TPE) on the first seed, pruned by successive halving on
    the validation metric, the best on the validation split then run on every seed (the suite's `tune` key)."""
    fields = {"text": text_field, "label": label_field, "input": input_field, "target": target_field}
    extra = [f"tune.trials={trials}"] if trials is not None else []
    flags = GridFlags(suite, model, task, method, scale, seed, [*(settings or []), *extra], name, test_file, fields,
                      allow_overlap, store, out, device, dry_run, no_memory_plan, executor, ray_address, gpus_per_run,
                      cpus_per_run, gpu_memory_gb, wide, as_json)
    done = _run_grid(flags, tuned=True)
    if done is None:
        return
    grid, counts, _, summary = done
    filed_as = grid.suite.name
    from peftbench.recording import complete
    from peftbench.store import read_rows
    from peftbench.tuning.studies import tune_part
    from peftbench.tuning.summary import summaries
    from peftbench.report.tuning import tuning_views

    planned = {stage.settings["study"] for stage in grid.stages}
    found = summaries(complete([row for row in read_rows(store) if (tune_part(row) or {}).get("study") in planned]))
    if as_json:
        print_json({"suite": filed_as, "counts": counts, "store": str(store), "summary": str(summary),
                    "studies": [study.as_dict() for study in found]})
        _exit_on_failures(counts)
        return
    out_console = stdout_console()
    for heading, cols, lines, notes in tuning_views(found):
        print_table(heading, cols, lines, wide=wide, notes=notes, out=out_console)
    _say_counts(filed_as, counts, store, summary)
    _exit_on_failures(counts)


def _say_counts(filed_as: str, counts: dict, store: Path, summary: Path) -> None:
    stdout_console().print(f"trained {counts.get('finished', 0)}, skipped {counts.get('skipped', 0)} already stored,"
                           f" failed {counts.get('failed', 0)}; store {store}; summary {summary} (every run of"
                           f" '{filed_as}' in the store)", markup=False, highlight=False)


def _exit_on_failures(counts: dict) -> None:
    """A grid that stored a failed run exits 1, so a script sees it without parsing the output."""
    if counts.get("failed"):
        sys.exit(EXIT_RUNS_FAILED)


def _run_grid(flags: GridFlags, tuned: bool = False) -> tuple["Plan", dict, list[dict], Path] | None:
    """Plan the grid (a study per method and block when `tuned`), refuse what cannot run, run it into the store and
    write its summary: (the plan, filed under its suite's name; counts; the stored rows of its runs; the summary's
    path); None after a dry run, which prints the grid instead."""
    from peftbench.flag_grids import check_name, derived_name, file_task_flags, within
    from peftbench.grid_inputs import Overrides, checked
    from peftbench.suite_files import load_suite

    tasks = file_task_flags(flags.task, flags.test_file, flags.fields, flags.allow_overlap)
    overrides = Overrides(models=flags.model, tasks=tasks, methods=flags.method, scales=flags.scale, seeds=flags.seed)
    if flags.name:
        check_name(flags.name)
    if not flags.dry_run:
        writable_folder(flags.out or flags.store.parent, "--out" if flags.out else "the store's folder")
    base = load_suite(flags.suite, flags.settings or [])
    checked(base, overrides)  # a mistyped method, option or task is refused before torch and PEFT load
    from peftbench.runner import GridInterrupted, lease_seconds

    if not flags.dry_run:
        lease_seconds()  # a bad PEFTBENCH_LEASE_SECONDS is refused before anything loads
    from peftbench.api import run_plan
    from peftbench.execution import pick_device
    from peftbench.executors import LocalExecutor, ray_executor
    from peftbench.interrupts import exit_code, ignore_further_signals
    from peftbench.memory_grids import device_target, refuse_unfit
    from peftbench.planning import plan, suite_strategy
    from peftbench.progress import GridProgress
    from peftbench.recording import complete
    from peftbench.report import summary_markdown
    from peftbench.run_history import rerun_ids, supersede
    from peftbench.sharding import refuse_unplaceable
    from peftbench.store import Store, read_rows
    from peftbench.tuning.plan import tuning

    grid = plan(base, overrides, load_data=not flags.dry_run, strategy=tuning if tuned else suite_strategy)
    for note in (note for task in grid.tasks.values() for note in task.notes):
        Console(stderr=True).print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    # Runs are filed under a name: the suite's while the flags only pick part of it, else one made of the axes.
    filed_as = flags.name or (base.name if within(grid.suite, base) else derived_name(grid.suite))
    grid.suite = grid.suite.model_copy(update={"name": filed_as})
    rerun = rerun_ids(flags.rerun, {r.run_id for r in grid.runs}, filed_as, flags.store) if flags.rerun else []
    chosen_device = pick_device(flags.device.value)
    target = device_target(chosen_device, flags.gpu_memory_gb)
    if flags.dry_run:
        _print_grid(grid, read_rows(flags.store), chosen_device, target, flags.as_json,
                    plan_memory=not flags.no_memory_plan)
        return None
    if target.kind == "cuda":  # a run that cannot fit is refused before any weights load or the store opens
        refuse_unfit(grid, target)
    if flags.executor == ExecutorKind.local:
        refuse_unplaceable(grid, chosen_device)
    if flags.ray_address and flags.executor != ExecutorKind.ray:
        raise UserError("--ray-address needs --executor ray")
    if flags.executor == ExecutorKind.ray:
        runs_on = ray_executor(flags.ray_address, flags.device.value, flags.cpus_per_run, flags.gpus_per_run)
    else:
        runs_on = contextlib.nullcontext(LocalExecutor(pick_device(flags.device.value)))
    opened = Store(flags.store)  # a damaged or unwritable store is refused before the progress display starts
    if rerun:
        try:
            supersede(opened, rerun)
        except BaseException:
            opened.close()
            raise
    console = Console(stderr=True)
    reporter = GridProgress(console, bars=console.is_terminal, lines=not flags.as_json or console.is_terminal)
    try:
        with runs_on as chosen, reporter:
            done = run_plan(grid, opened, chosen, reporter)
    except GridInterrupted as stop:
        ignore_further_signals()
        console.print(str(stop), markup=False, highlight=False, soft_wrap=True)
        sys.exit(exit_code())
    finally:
        opened.close()
    ids = {r.run_id for r in grid.runs}
    suite_rows = complete([row for row in read_rows(flags.store) if row["suite"] == filed_as or row["run_id"] in ids])
    summary = summary_path(flags.out or flags.store.parent, filed_as, flags.store)
    try:
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(summary_markdown(suite_rows, f"peftbench suite {filed_as}", flags.store), encoding="utf-8")
    except OSError as error:
        raise UserError(f"the runs are stored, but the summary '{summary}' cannot be written ({error.strerror});"
                        " free space or pass --out FOLDER, then run the same command again") from None
    return grid, done.counts, done.rows, summary


def _print_grid(grid, stored: list[dict], device, target, as_json: bool, plan_memory: bool) -> None:
    from peftbench.views import dry_run_view

    data, lines = dry_run_view(grid, stored, device, target, plan_memory)
    if as_json:
        print_json(data)
        return
    console = stdout_console()
    for line in lines:
        console.print(Text(line), soft_wrap=True)  # one line per run or study, wrapped by the terminal if at all
