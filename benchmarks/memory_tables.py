"""The tables of docs/memory.md, generated from peftbench's memory plan (peftbench.memory):

    python benchmarks/memory_tables.py cpu [--from DIR]   # plan vs measured peak on this CPU
    python benchmarks/memory_tables.py lialin [--seq-len L]  # plan vs Lialin et al. Table 5's peak memory
    python benchmarks/memory_tables.py fits               # the papers' models x methods on 24/40/80/141 GB

`cpu` measures with `peftbench profile` (each method in a fresh process, peak resident-set growth over the
training steps above the built model), so the plan's comparable figure is gradients + AdamW states +
activations: the weights and the method's tensors are in the built model the growth is measured above.
`--from DIR` reads profile JSONs written earlier (`peftbench profile ... --json > DIR/NAME.json`) instead.
Prints Markdown."""

import argparse
import json
import sys
from pathlib import Path

from peftbench.memory import GB, MAX_PROCESSES, MemorySettings
from peftbench.memory_grids import Target, planned, run_settings

# (model, profile flags): CPU shapes small enough to measure on 2 cores, every family peftbench trains.
CPU_CASES = [
    ("offline:minilm-l6", ["full", "lora", "ia3"], dict(batch_size=16, seq_len=128, target_len=8)),
    ("offline:smollm2-135m", ["full", "lora", "ia3"], dict(batch_size=8, seq_len=128, target_len=8)),
    ("config:tiny-t5", ["full", "lora"], dict(batch_size=16, seq_len=128, target_len=8)),
    ("config:tiny-llama", ["full", "lora"], dict(batch_size=16, seq_len=128, target_len=8)),
    ("config:opt-125m", ["full", "lora"], dict(batch_size=8, seq_len=128, target_len=8)),
]

# Lialin et al. Table 5, peak memory (GB) per method, with the suite lialin2024's spec of each method.
LIALIN_TABLE5 = {
    "full": ("Full tuning", 20.7, 32.9, 104.9),
    "houlsby": ("Houlsby", 12.1, 9.3, 28.8),
    "pfeiffer": ("Pfeiffer", 14.0, 9.6, 28.6),
    "parallel_adapter[reduction=2,scale=4]": ("Parallel Adapter", 14.7, 10.0, 29.0),
    "ia3": ("IA3", 16.2, 10.8, 31.0),
    "prefix_tuning[tokens=30,hidden=512]": ("Prefix tuning", 15.4, 12.3, 37.9),
    "prefix_tuning[tokens=30,hidden=0]": ("Prompt tuning", 10.6, 8.9, 30.2),
    "ln_tuning": ("LN tuning", 14.6, 9.7, 28.4),
    "lora[r=8,alpha=8,targets=qv]": ("LoRA (q and v)", 14.3, 9.6, 28.9),
    "lora[r=8,alpha=8,targets=all-linear]": ("LoRA (all)", 15.9, 10.6, 30.8),
    "krona[b_rank=8,init=lokr]": ("KronA", 14.6, 10.8, 33.2),
    "compacter": ("Compacter", 14.4, 9.7, 28.6),
    "compacter_pp": ("Compacter++", 13.9, 9.5, 28.5),
    "mam[tokens=30,hidden=800]": ("MAM", 16.6, 14.2, 43.3),
    "unipelt[tokens=10,hidden=512]": ("UniPELT", 16.7, 12.8, 38.9),
}
# Lialin et al. Table 3: micro-batch sizes; RTE and COPA (512 input, 8 target tokens) have the largest.
LIALIN_MODELS = [("config:t5-large", 32), ("config:t5-3b", 4), ("config:t5-11b", 1)]

FIT_SUITES = [("pu2023", ["config:flan-t5-xl"]), ("lialin2024", ["config:t5-large", "config:t5-3b", "config:t5-11b"]),
              ("hamilton2023", ["config:opt-125m", "config:opt-350m"])]
GPU_SIZES = (24, 40, 80, 141)


def _pct(estimate: float, reference: float) -> str:
    return f"{(estimate / reference - 1) * 100:+.0f}%"


def cpu_table(source: Path | None) -> str:
    from peftbench.profile import ProfileSettings, profile

    lines = ["| model | method | shape | measured growth (MB) | planned (MB) | error |", "|---|---|---|---|---|---|"]
    for model, methods, shape in CPU_CASES:
        name = model.split(":")[-1]
        if source:
            path = source / f"{name}.json"
            if not path.exists():
                print(f"skipping {model}: no {path}", file=sys.stderr)
                continue
            result = json.loads(path.read_text())
        else:
            settings = ProfileSettings(model=model, steps=3, warmup=1, dtype="fp32", device="cpu", **shape)
            result = profile(settings, methods[1:])
        for entry in result["methods"]:
            if entry["status"] != "ok":
                lines.append(f"| {model} | {entry['method']} | | {entry['status']} | | |")
                continue
            plan = planned(MemorySettings(model=model, method=entry["method"], **shape))
            estimate = plan.total - plan.weights - plan.method_tensors  # what grows above the built model
            measured = entry["peak_memory_bytes"]
            lines.append(f"| {model} | {entry['method']} | {shape['batch_size']} × {shape['seq_len']}"
                         f"{'' if plan.family == 'encoder' else ' + ' + str(shape['target_len'])} | {measured / 1e6:,.0f}"
                         f" | {estimate / 1e6:,.0f} | {_pct(estimate, measured)} |")
    return "\n".join(lines)


def lialin_table(seq_len: int = 512) -> str:
    head = "| method | " + " | ".join(f"{m.split(':')[1]} (mb {b}): paper / plan / error" for m, b in LIALIN_MODELS)
    lines = [head + " |", "|---|" + "---|" * len(LIALIN_MODELS)]
    for spec, (label, *paper) in LIALIN_TABLE5.items():
        cells = []
        for (model, micro), reference in zip(LIALIN_MODELS, paper):
            plan = planned(MemorySettings(model=model, method=spec, batch_size=micro, seq_len=seq_len, target_len=8,
                                          weights_dtype="bfloat16"))
            cells.append(f"{reference:.1f} / {plan.total / GB:.1f} / {_pct(plan.total, reference * GB)}")
        lines.append(f"| {label} (`{spec}`) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cheapest(plan, capacity: float) -> str:
    """The first option that fits, in the order of least change: as is, checkpointing, a smaller micro-batch
    (dividing the suite's), both, sharding, checkpointing and sharding, all three at micro-batch 1."""
    if plan.total <= capacity:
        return "fits"
    if plan.peak_on(1, plan.activations_checkpointed) <= capacity:
        return "checkpointing"
    batch = plan.settings.batch_size
    for checkpointed, label in ((False, ""), (True, "checkpointing + ")):
        micro = next((m for m in range(batch - 1, 0, -1) if batch % m == 0
                      and plan.fixed + plan.activations_at(m, checkpointed) <= capacity), 0)
        if micro:
            return f"{label}micro-batch {micro}"
    for checkpointed, label in ((False, ""), (True, "checkpointing + ")):
        shards = plan.shards_needed(capacity, checkpointed)  # the suite's micro-batch split between the GPUs
        if shards and shards <= batch:
            return f"{label}{shards} GPUs (FSDP)"
    # Fewer GPUs than that, each running one sequence at a time, with gradient accumulation over the batch.
    shards = next((n for n in range(2, MAX_PROCESSES + 1)
                   if plan.peak_on(n, plan.activations_of(1, True)) <= capacity), None)
    return f"checkpointing + micro-batch 1 + {shards} GPUs (FSDP)" if shards else "no"


def fits_table() -> str:
    from peftbench.suite_files import load_suite

    out = []
    for suite_name, models in FIT_SUITES:
        suite = load_suite(suite_name)
        for model in models:
            out += [f"\n**{model}**, suite {suite_name}: micro-batch {suite.batch_size} × {suite.max_input_length}"
                    f" input + {suite.max_target_length} target tokens, {suite.weights_dtype} weights, bf16 autocast"
                    " (run's CUDA defaults)\n",
                    "| method | planned peak (GB) | with checkpointing (GB) | " + " | ".join(f"{g} GB" for g in GPU_SIZES)
                    + " |", "|---|---|---|" + "---|" * len(GPU_SIZES)]
            for spec in suite.methods_for(model):  # with the suite's per-size method_overrides
                settings = run_settings({"model": model, "method_spec": spec, "batch_size": suite.batch_size,
                                         "max_input_length": suite.max_input_length,
                                         "max_target_length": suite.max_target_length,
                                         "weights_dtype": suite.weights_dtype, "bf16_autocast": suite.bf16_autocast},
                                        Target("cuda", 0, "planning"))
                plan = planned(settings)
                cells = [_cheapest(plan, size * GB) for size in GPU_SIZES]
                out.append(f"| `{spec}` | {plan.total / GB:,.1f} | {plan.peak_on(1, plan.activations_checkpointed) / GB:,.1f}"
                           f" | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=["cpu", "lialin", "fits"])
    parser.add_argument("--from", dest="source", type=Path, help="profile JSONs to read instead of measuring")
    parser.add_argument("--seq-len", type=int, default=512, help="lialin: input tokens of every sequence")
    arguments = parser.parse_args()
    print({"cpu": lambda: cpu_table(arguments.source), "lialin": lambda: lialin_table(arguments.seq_len), "fits": fits_table}[arguments.table]())


if __name__ == "__main__":
    main()
