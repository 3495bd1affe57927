"""What peftbench knows without training: `methods`, `tasks`, `params` (meta-device counts), `memory`
(plans), `prices` and `suites`."""

import math
import sys
from enum import Enum
from typing import Annotated

import typer

from peftbench.cli.common import DType, JsonFlag, WideFlag, app, print_json, show_view, stdout_console
from peftbench.errors import UserError


@app.command()
def methods(wide: WideFlag = False, as_json: JsonFlag = False) -> None:
    """List the fine-tuning methods by Lialin et al.'s taxonomy, with their options, learning-rate schedules
    (start → peak → end), references and whether peftbench or HF PEFT implements them."""
    from peftbench.methods.catalog import catalog
    from peftbench.views import methods_views

    entries = [{"name": name, "summary": m["summary"],
                "options": {key: str(option["default"]) for key, option in m["options"].items()},
                "default_lr": m["default_lr"], "peak_lr": m["default_lr"] * m["peak_factor"],
                **{fact: m[fact] for fact in ("peak_factor", "final_factor", "mergeable", "identity_init",
                                              "text_to_text_only", "source", "taxonomy", "reference")}}
               for name, m in catalog().items()]
    if as_json:
        print_json(entries)
        return
    for heading, view in methods_views(entries):
        show_view(heading, view, wide)


@app.command()
def tasks(wide: WideFlag = False, as_json: JsonFlag = False) -> None:
    """List the built-in tasks (and how to use your own data with file:PATH)."""
    from peftbench.tasks import TASKS
    from peftbench.views import tasks_view

    entries = [{"name": name, "kind": t.kind, "labels": t.labels, "primary_metric": t.primary_metric,
                "source": t.source, "description": t.description, "template": t.template} for name, t in TASKS.items()]
    if as_json:
        print_json(entries)
        return
    show_view("tasks", tasks_view(entries), wide)


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
    from peftbench.suite_files import load_suite
    from peftbench.views import params_view

    specs = list(method or [])
    if suite:
        specs += load_suite(suite).methods_for(model)
    if not specs:
        raise UserError("name at least one method (--method lora) or a suite (--suite pu2023)")
    rows = [count(model, spec, seed).as_row() for spec in dict.fromkeys(specs)]
    if as_json:
        print_json(rows)
        return
    show_view(f"parameters of {model} ({rows[0]['total']:,} in the base model)", params_view(rows), wide)


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
    processes: Annotated[int, typer.Option("--processes", help="plan one GPU of a run sharded over this many with"
                                           " FSDP (the suite key sharding: {processes: N})")] = 1,
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
                  gradient_checkpointing=gradient_checkpointing, processes=processes)
    plans = [plan_memory(MemorySettings(method=spec, **common)) for spec in specs]
    # A PEFT alternative for methods that train everything, planned at the same shape.
    peft = next((p for p in plans if p.trainable_params < p.total_params / 100), None)
    if peft is None and any(p.total > min(sizes) * GB for p in plans):
        peft = plan_memory(MemorySettings(method="lora", **common))
    if as_json:
        print_json([{**plan.as_dict(), "fits": {f"{size:g}": plan.total <= size * GB for size in sizes},
                      "options": {f"{size:g}": fit_options(plan, size * GB, peft if peft is not plan else None)
                                  for size in sizes if plan.total > size * GB},
                      "shards_needed": {f"{size:g}": plan.shards_needed(size * GB) for size in sizes}}
                     for plan in plans])
        return
    out = stdout_console()
    targets = "" if plans[0].family == "encoder" else f" + {target_len} target"
    out.print(f"{model} · micro-batch {batch_size} × {seq_len} input{targets} tokens · {weights_dtype.value}"
              f" weights · {'bf16 autocast' if dtype == DType.bf16 else 'fp32 compute'} · AdamW"
              f"{' · gradient checkpointing' if gradient_checkpointing else ''}"
              f"{f' · sharded over {processes} GPUs (FSDP), per GPU' if processes > 1 else ''}",
              markup=False, highlight=False)
    show_view(f"planned peak training memory of {model}", memory_view(plans), wide)
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
        print_json(table)
        return
    show_view("machine prices (edit prices.yaml or set PEFTBENCH_PRICES)", prices_view(table), wide)


suites_app = typer.Typer(help="List the built-in suites, or print one to copy.", invoke_without_command=True,
                         no_args_is_help=False)
app.add_typer(suites_app, name="suites")


@suites_app.callback()
def suites(ctx: typer.Context, wide: WideFlag = False, as_json: JsonFlag = False) -> None:
    """List the built-in suites with their grids; `suites show NAME` prints one."""
    if ctx.invoked_subcommand is not None:
        return
    from peftbench.suite_files import builtin_suites, load_suite
    from peftbench.views import suites_view

    loaded = {name: load_suite(name) for name in sorted(builtin_suites())}
    if as_json:
        print_json([{"name": name, "description": s.description, "path": str(builtin_suites()[name]),
                      "models": s.models, "tasks": [str(t) for t in s.tasks], "methods": s.methods,
                      "scales": s.scales, "seeds": s.seeds} for name, s in loaded.items()])
        return
    show_view("built-in suites", suites_view(loaded), wide)


@suites_app.command("show")
def suites_show(
    name: Annotated[str, typer.Argument(help="a built-in suite's name (or a suite file)")],
    as_json: JsonFlag = False,
) -> None:
    """Print a suite's file as it is, to read or to copy: `peftbench suites show quickstart > my.yaml`."""
    from peftbench.suite_files import load_suite, suite_path

    path = suite_path(name)
    text = path.read_text(encoding="utf-8")
    if as_json:
        print_json({"name": name, "path": str(path), "text": text, "suite": load_suite(name).model_dump()})
        return
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
