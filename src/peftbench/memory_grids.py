"""A grid's memory against the device it runs on: the target (this device, or a GPU of a size given with
--gpu-memory-gb), each planned training run's memory plan (peftbench.memory) for the dry run, and the refusal,
before anything loads, of a grid whose runs cannot fit."""

import functools
import math
import os
from dataclasses import asdict, dataclass

import torch

from peftbench.errors import UserError
from peftbench.memory import GB, MemoryPlan, MemorySettings, fit_options, gb, plan_memory
from peftbench.memory_trace import UntraceableError


@dataclass(frozen=True)
class Target:
    """What a grid is planned for: the device kind (its autocast rules) and its memory in bytes."""

    kind: str  # cuda | cpu
    capacity: float
    label: str  # with its size: "a GPU of 80 GB (--gpu-memory-gb)", "NVIDIA H100 (85.0 GB)", "this machine (25.3 GB)"


def device_target(device: torch.device, gpu_memory_gb: float | None = None) -> Target:
    """`--gpu-memory-gb X`: a CUDA GPU of X GB (planning for another machine); otherwise this device's
    memory (a CUDA device's total, or the host's physical memory for the CPU)."""
    if gpu_memory_gb is not None:
        if not (gpu_memory_gb > 0 and math.isfinite(gpu_memory_gb)):
            raise UserError("--gpu-memory-gb must be a positive number of GB, e.g. --gpu-memory-gb 80")
        return Target("cuda", gpu_memory_gb * GB, f"a GPU of {gpu_memory_gb:g} GB (--gpu-memory-gb)")
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        return Target("cuda", properties.total_memory, f"{properties.name} ({gb(properties.total_memory)})")
    pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return Target("cpu", pages * size, f"this machine ({gb(pages * size)})")


def run_settings(spec: dict, target: Target) -> MemorySettings:
    """The memory settings of a planned training run (a runner.Run's spec) on `target`."""
    from peftbench.precision import autocast_dtype
    from peftbench.sharding import processes

    autocasts = autocast_dtype(torch.device(target.kind), spec.get("bf16_autocast", True),
                               spec.get("cpu_bf16", "off")) is not None
    return MemorySettings(model=spec["model"], method=spec["method_spec"], batch_size=spec["batch_size"],
                          seq_len=spec["max_input_length"], target_len=spec["max_target_length"],
                          weights_dtype=spec.get("weights_dtype", "float32"), autocast=autocasts,
                          gradient_checkpointing=spec.get("gradient_checkpointing", False),
                          processes=processes(spec), grad_accum=spec.get("grad_accum", 1))


planned = functools.cache(plan_memory)  # a grid repeats each shape over tasks, scales and seeds


def _training_specs(grid) -> list[dict | None]:
    """The spec of every run of a planning.Plan (None for baselines, which do not train), then of every run that
    waits in a stage (a sweep's seeds, a study's trials), in the order of the dry run's list."""
    specs = [run.spec if run.kind == "train" else None for run in grid.runs]
    return specs + [waiting for stage in grid.stages for waiting in stage.waiting()]


@functools.cache
def _plan_or_reason(settings: MemorySettings) -> MemoryPlan | str:
    try:
        return planned(settings, micro_batches=False)
    except UntraceableError as error:
        return str(error)


def grid_memory(grid, target: Target) -> list[MemoryPlan | str | None]:
    """The memory plan of each run of `_training_specs(grid)` on `target` at its own micro-batch (plan_memory
    without micro_batches), traced once per distinct model x method x shape: None for baselines, and for a run
    whose forward pass cannot be traced the reason (its run is not refused for memory; it fails on its own)."""
    return [None if spec is None else _plan_or_reason(run_settings(spec, target)) for spec in _training_specs(grid)]


def refuse_unfit(grid, target: Target) -> None:
    """Raise UserError naming the first training run that will not fit `target`, how many do not, and the
    options that would make it fit; before any weights load or the store opens."""
    unfit = [(spec, plan) for spec, plan in zip(_training_specs(grid), grid_memory(grid, target))
             if isinstance(plan, MemoryPlan) and plan.total > target.capacity]
    if not unfit:
        return
    spec, plan = unfit[0]
    plan = planned(plan.settings)  # with the trace at one sequence, to plan smaller micro-batches
    peft = None
    if plan.trainable_params > plan.total_params / 100:
        peft = planned(MemorySettings(**{**asdict(plan.settings), "method": "lora"}), micro_batches=False)
    options = fit_options(plan, target.capacity, peft, spec.get("grad_accum", 1))
    shown = [o.replace("gradient checkpointing (", "gradient_checkpointing: true (").replace(
        "micro-batch ", "batch_size ").replace(" with gradient accumulation ", " with grad_accum ") for o in options]
    others = f" ({len(unfit)} of the grid's runs do not fit)" if len(unfit) > 1 else ""
    each = f" on each of its {plan.settings.processes} GPUs" if plan.settings.processes > 1 else ""
    raise UserError(f"{spec['model']} · {spec['method_spec']} at micro-batch {plan.settings.batch_size} needs about"
                    f" {gb(plan.total)}{each} to train, more than {target.label}{others}; options: "
                    + ("; ".join(shown) or "none at this shape (shorten max_input_length)")
                    + " (see `peftbench memory`)")
