"""The terminal views of the listing commands (methods, tasks, params, prices, profile, suites) and of a dry
run: columns typed for peftbench.terminal, so that at 80 columns no number or name is cut."""

from collections.abc import Callable

from peftbench.configurations import fmt_lr as lr_text
from peftbench.terminal import Col


LAYER_OPTIONS = {"layers": "all", "modules": "", "drop": ""}  # the ablation options many methods share


def lr_schedule(lr: float, peak_factor: float, final_factor: float) -> str:
    """`3e-5 → 3e-4 → 3e-5`: where warm-up starts, the peak it reaches, where annealing ends (train.lr_factor)."""
    return f"{lr_text(lr)} → {lr_text(lr * peak_factor)} → {lr_text(lr * final_factor)}"


def methods_views(entries: list[dict]) -> list[tuple[str, tuple]]:
    """One table per group of Lialin et al.'s taxonomy; each names the survey's methods of that group that
    neither peftbench nor HF PEFT implements. The general notes close the last."""
    from peftbench.taxonomy import GROUPS, SURVEY

    views = []
    for group, heading in GROUPS.items():
        cols, rows, notes = methods_view([e for e in entries if e["taxonomy"] == group])
        missing = [f"{s.name} ({s.reference}; section {s.section})" for s in SURVEY if s.group == group and not s.method]
        views.append((heading, (cols, rows, [f"Also in the survey, implemented by neither peftbench nor HF PEFT: "
                                             f"{', '.join(missing)}."] if missing else [])))
    heading, (cols, rows, group_notes) = views[-1]
    views[-1] = (heading, (cols, rows, group_notes + notes))
    return views


def methods_view(entries: list[dict]) -> tuple[list[Col], list[list[str]], list[str]]:
    cols = [Col("name", "name"), Col("lr start → peak", "text"), Col("options (defaults)", "text"),
            Col("implemented by", "text", optional=True), Col("summary", "text", optional=True),
            Col("lr end", "number", optional=True), Col("mergeable", "name", optional=True),
            Col("reference", "text", optional=True)]
    rows = []
    for e in entries:
        own = {k: v for k, v in e["options"].items() if LAYER_OPTIONS.get(k) != v}
        layered = "+layers" if set(LAYER_OPTIONS) <= set(e["options"]) else ""
        options = ", ".join([f"{k}={v}" for k, v in own.items()] + ([layered] if layered else [])) or "–"
        lr = e["default_lr"]
        rows.append([e["name"], f"{lr_text(lr)} → {lr_text(lr * e['peak_factor'])}", options, e["source"],
                     e["summary"], lr_text(lr * e["final_factor"]), "yes" if e["mergeable"] else "no",
                     e["reference"]])
    notes = ["lr is where warm-up starts: it climbs linearly to the peak (lr × peak_factor) over warmup_ratio of the"
             " steps, then anneals linearly to lr end (lr × final_factor). A suite's learning_rates set the start.",
             "+layers: the method also takes the ablation options layers=all|early|later|random|0,1,5-7,"
             " modules=... and drop=... (see the README)."]
    return cols, rows, notes


def tasks_view(entries: list[dict]) -> tuple[list[Col], list[list[str]], list[str]]:
    cols = [Col("name", "name"), Col("kind", "name"), Col("metric", "name"), Col("labels", "text"),
            Col("source", "text", optional=True)]
    rows = [[e["name"], e["kind"], e["primary_metric"], ", ".join(e["labels"]) or "–", e["source"]] for e in entries]
    notes = ["Your own data: --task file:PATH with a JSONL/CSV file of text+label (classification) or input+target"
             " (generation) columns; --text-field/--label-field name other columns, --test-file a held-out test set."]
    return cols, rows, notes


def _at_budget(row: dict) -> str:
    """AdaLoRA starts at init_r and prunes to its budget: both counts."""
    budget = row.get("trainable_at_budget")
    return "" if budget is None else f" ({budget:,} at budget)"


def params_view(rows_in: list[dict]) -> tuple[list[Col], list[list[str]], list[str]]:
    cols = [Col("spec", "name"), Col("trainable", "number"), Col("% of base", "number"),
            Col("changed after merge", "number"), Col("added", "number", optional=True),
            Col("adapter bytes", "number", optional=True), Col("added %", "number", optional=True),
            Col("changed %", "number", optional=True)]
    rows = [[r["spec"], f"{r['trainable']:,}" + _at_budget(r), f"{r['trainable_pct']:.4f}",
             f"{r['changed']:,}" if r["mergeable"] else "no merge", f"{r['added']:,}", f"{r['adapter_bytes']:,}",
             f"{r['added_pct']:.4f}", f"{r['changed_pct']:.2f}"] for r in rows_in]
    notes = ["trainable: parameters the optimizer updates; changed after merge: base-weight entries that differ once"
             " the method is folded in; added: new tensors (frozen ones too); adapter bytes: the saved checkpoint."]
    return cols, rows, notes


def prices_view(table: dict) -> tuple[list[Col], list[list[str]], list[str]]:
    cols = [Col("name", "name"), Col("USD/hour", "number"), Col("$1 buys", "number"),
            Col("source", "text", optional=True)]
    rows = [[name, f"{entry['usd_per_hour']:.4f}", f"{3600 / entry['usd_per_hour']:,.0f} s",
             " ".join(str(entry.get("source", "")).split())] for name, entry in table.items()]
    return cols, rows, []


def _with_pct(value: str, entry: dict, field: str) -> str:
    pct = (entry.get("pct_of_full") or {}).get(field)
    return value if pct is None or value == "–" else f"{value} ({pct:.0f}%)"


def profile_view(result: dict) -> tuple[list[Col], list[list[str]], list[str]]:
    mib = lambda v: "–" if v is None else f"{v / 2**20:,.1f}"  # noqa: E731
    rate = lambda v: "–" if v is None else f"{v:,.0f}"  # noqa: E731
    mfu = lambda v: "–" if v is None else f"{100 * v:.2g}%"  # noqa: E731
    failed = any(entry["status"] != "ok" for entry in result["methods"])
    cols = [Col("method", "name"), Col("peak MiB", "number"), Col("train tok/s", "number"),
            Col("infer tok/s", "number"), Col("merged infer tok/s", "number", optional=True),
            Col("train MFU", "number", optional=True), Col("infer MFU", "number", optional=True),
            Col("trainable", "number", optional=True)] + ([Col("status / error", "text")] if failed else [])
    rows = []
    for entry in result["methods"]:
        if entry["status"] != "ok":
            rows.append([entry["method"], *["–"] * 7, f"{entry['status'].upper()}: {entry.get('error', '')}"])
            continue
        rows.append([entry["method"], _with_pct(mib(entry["peak_memory_bytes"]), entry, "peak_memory_bytes"),
                     _with_pct(rate(entry["train_tokens_per_s"]), entry, "train_tokens_per_s"),
                     _with_pct(rate(entry["infer_tokens_per_s"]), entry, "infer_tokens_per_s"),
                     _with_pct(rate(entry["infer_merged_tokens_per_s"]), entry, "infer_merged_tokens_per_s"),
                     mfu(entry.get("train_mfu")), mfu(entry.get("infer_mfu")),
                     f"{entry['trainable_params']:,}"] + ([""] if failed else []))
    kind = next((e["peak_memory_kind"] for e in result["methods"] if e["status"] == "ok"), "")
    peak = next((e.get("peak_source") for e in result["methods"] if e["status"] == "ok"), None)
    notes = [("(%) of full tuning, measured in the same call; " if result.get("reference") else "")
             + f"peak memory: {kind}; MFU against the {peak or 'unknown peak'}."]
    return cols, rows, notes


def suites_view(suites: dict) -> tuple[list[Col], list[list[str]], list[str]]:
    """Built-in suites with the size of their grid, from their files (nothing is planned or downloaded)."""
    cols = [Col("name", "name"), Col("runs", "number"), Col("grid", "name"), Col("description", "text")]
    rows = []
    for name, suite in suites.items():
        points = len(suite.models) * len(suite.tasks) * len(suite.methods) * len(suite.scales)
        axes = f"{len(suite.models)}×{len(suite.tasks)}×{len(suite.methods)}×{len(suite.scales)}"
        if suite.sweep:  # every LR on the first seed, then the other seeds at the chosen one
            per_point = len(suite.sweep.lr) + len(suite.seeds) - 1
            shape = f"{axes}×({len(suite.sweep.lr)}+{len(suite.seeds) - 1})"
        else:
            per_point, shape = len(suite.seeds), f"{axes}×{len(suite.seeds)}"
        rows.append([name, f"{points * per_point:,}", shape, suite.description or "–"])
    notes = ["runs: training runs (baselines come on top); grid: models × tasks × methods × scales × seeds, or"
             " with an LR sweep × (LRs + the other seeds).",
             "`peftbench suites show NAME` prints a suite's file (`> my.yaml` copies it); `peftbench run NAME"
             " --dry-run` lists its runs and estimates their time."]
    return cols, rows, notes


def _axes(tune: dict) -> str:
    return ", ".join(f"{name} {axis['low']:.3g}–{axis['high']:.3g}" if "low" in axis
                     else f"{name} {{{', '.join(map(str, axis['choices']))}}}" for name, axis in tune["space"].items())


def _waiting_lines(waiting: list[dict], fits: Callable[[dict], str]) -> list[str]:
    """What waits in the stages, as the dry run lists it: each sweep seed on its own line; each tuning study on
    one line (its trials, then its two settings' other seeds), since a study's trials differ only in settings
    the search has not chosen yet."""
    lines, studies = [], {}
    for entry in waiting:
        if entry["after"] == "sweep":
            what = f"seed {entry['seed']} · lr chosen by the sweep ({entry['sweep']['select_by']})"
            lines.append(f"{'(after sweep)':16}  train     {entry['model']} · {entry['task']} · {entry['method_spec']}"
                         f" · {what}{fits(entry)}")
        else:
            key = (entry["model"], entry["task"], entry["method_spec"], entry["n_train"])
            studies.setdefault(key, []).append(entry)
    for (model, task, method_spec, _), entries in studies.items():
        tune = entries[0]["tune"]
        trials = [entry for entry in entries if "trial" in entry]
        later = sorted({entry["seed"] for entry in entries if "trial" not in entry})
        what = (f"{len(trials)} trials on seed {trials[0]['seed']} (trial 0 at the defaults, then TPE over"
                f" {_axes(tune)})")
        if later:
            what += (f"; then the defaults and the best trial ({tune['select_by']}) on seed{'s' * (len(later) > 1)}"
                     f" {', '.join(map(str, later))}")
        lines.append(f"{'(after tuning)':16}  train     {model} · {task} · {method_spec} · {what}{fits(entries[0])}")
    return lines


def dry_run_view(grid, stored: list[dict], device, target, plan_memory: bool = True) -> tuple[dict, list[str]]:
    """A dry run's grid as JSON and as lines: the runs (marked when already stored), the seeds that wait for
    their sweep, the estimated time on this device and, unless `plan_memory` is off, each training run's
    memory plan against `target`. Hub tasks are not downloaded for it, so their runs show the scale's nominal
    size (n<=N) and no final id."""
    from peftbench.estimate import estimate
    from peftbench.memory import GB
    from peftbench.memory_grids import grid_memory
    from peftbench.terminal import clock

    finished = {row["run_id"] for row in stored if row.get("status") == "finished"}
    guess = estimate(grid, stored, device)
    waiting = [{**entry, "kind": "train"} for stage in grid.stages for entry in stage.waiting()]
    plans = grid_memory(grid, target) if plan_memory else [None] * (len(grid.runs) + len(waiting))

    def memory(plan) -> dict | None:
        if isinstance(plan, str):
            return {"peak_bytes": None, "fits": None, "not_planned": plan}
        return None if plan is None else {"peak_bytes": plan.total, "fits": plan.total <= target.capacity,
                                          "parts": plan.parts(), "autocast": plan.settings.autocast,
                                          "gradient_checkpointing": plan.settings.gradient_checkpointing,
                                          "processes": plan.settings.processes}

    runs = [{"run_id": r.run_id if r.spec["task"] in grid.splits else None, "kind": r.kind, **r.spec,
             "peak_lr": r.spec["lr"] * r.spec["peak_factor"] if "lr" in r.spec else None,
             "stored": r.run_id in finished, "memory": memory(plan)} for r, plan in zip(grid.runs, plans)]
    waiting = [{**entry, "memory": memory(plan)} for entry, plan in zip(waiting, plans[len(grid.runs):])]
    todo = [pair for pair, run in zip(zip(guess.at_most, guess.typical), [*runs, *waiting]) if not run.get("stored")]
    known = [pair for pair in todo if pair[0] is not None]
    unknown = len(todo) - len(known)
    at_most, typical = sum(a for a, _ in known), sum(t for _, t in known)
    data = {"suite": grid.suite.name, "size": grid.size, "runs": runs, "waiting": waiting,
            "memory_target": {"kind": target.kind, "capacity_bytes": target.capacity, "label": target.label,
                              "planned": plan_memory},
            "estimate": {"seconds": at_most, "typical_seconds": typical, "device": str(device), "basis": guess.basis,
                         "runs_not_estimated": unknown, "per_run_seconds": guess.at_most,
                         "per_run_typical_seconds": guess.typical}}
    def fits(entry: dict) -> str:
        plan = entry["memory"]
        if plan is None:
            return ""
        if plan["peak_bytes"] is None:
            return " · memory not planned (its forward pass fails: see `peftbench memory`)"
        each = f" on each of {plan['processes']} GPUs (FSDP)" if plan["processes"] > 1 else ""
        return f" · memory {plan['peak_bytes'] / GB:,.1f} GB{each}" + ("" if plan["fits"] else " DOES NOT FIT")

    lines = []
    for r, entry in zip(grid.runs, runs):
        n = r.spec["n_train"]
        size = f"n={n}" if r.spec["task"] in grid.splits else f"n<={n}" if n else "n=all"
        run_id = r.run_id if r.spec["task"] in grid.splits else "(after download)"
        lr = f" · lr {lr_schedule(r.spec['lr'], r.spec['peak_factor'], r.spec['final_factor'])}" if "lr" in r.spec else ""
        lines.append(f"{run_id:16}  {r.kind:8}  {r.spec['model']} · {r.spec['task']} · {r.spec['method_spec']} · "
                     f"{size} · seed {r.spec['seed']}{lr}{fits(entry)}" + (" · stored, skipped" if entry["stored"] else ""))
    lines += _waiting_lines(waiting, fits)
    skipped = sum(entry["stored"] for entry in runs)
    lines.append(f"{grid.size} runs in suite '{grid.suite.name}'" + (f" ({len(waiting)} wait for earlier runs)" if waiting
                                                                    else "")
                 + (f"; {skipped} already stored will be skipped" if skipped else ""))
    typically = f"typically {clock(typical)} (as early as the stored runs stopped), " if typical < at_most else ""
    lines.append(f"estimated time on {device} for {len(known)} run(s): {typically}at most {clock(at_most)} (every"
                 " epoch run)" + (f"; {unknown} run(s) of hub data of unknown size not counted" if unknown else ""))
    lines += [f"  based on {line}" for line in guess.basis]
    unfit = sum(1 for entry in [*runs, *waiting] if entry["memory"] and entry["memory"]["fits"] is False)
    lines.append(f"memory: planned peak training memory against {target.label}"
                 + (f"; {unfit} run(s) DO NOT FIT (see `peftbench memory` for the options)" if unfit else
                    "; every training run fits") if plan_memory else "memory: not planned (--no-memory-plan)")
    lines.append("lr: where warm-up starts → its peak (lr × peak_factor) → where annealing ends.")
    return data, lines


GPU_SIZES_GB = (24, 40, 80, 141)  # the usual single-GPU memories: A10/4090, A100-40, A100/H100-80, H200


def memory_view(plans: list, capacities_gb: tuple[float, ...] = GPU_SIZES_GB) -> tuple[list, list[list[str]], list[str]]:
    """Memory plans (peftbench.memory.MemoryPlan) side by side, one column per method, and per method
    which GPU sizes it fits."""
    from peftbench.memory import GB
    from peftbench.terminal import Col

    labels = [("weights", "weights"), ("method tensors", "method_tensors"), ("gradients", "gradients"),
              ("AdamW states", "optimizer_states"), ("activations", "activations")]
    if plans[0].settings.processes > 1:  # one GPU of a sharded run: what FSDP gathers whole comes on top
        labels.insert(4, ("FSDP gathered units", "fsdp_gathered"))
    cols = [Col("GB", "name")] + [Col(plan.settings.method, "number") for plan in plans]
    rows = [[label] + [f"{plan.parts()[key] / GB:,.2f}" for plan in plans] for label, key in labels]
    rows.append(["total (peak)"] + [f"{plan.total / GB:,.2f}" for plan in plans])
    other = "with" if not plans[0].settings.gradient_checkpointing else "without"
    rows.append([f"total {other} checkpointing"]
                + [f"{plan.peak_on(plan.settings.processes, plan.activations_checkpointed if other == 'with' else plan.activations_full) / GB:,.2f}"
                   for plan in plans])
    rows.append(["trainable parameters"] + [f"{plan.trainable_params:,}" for plan in plans])
    notes = ["peak = weights + method tensors + AdamW states + the larger of gradients and activations (saved for"
             " the backward pass, traced on fake tensors; both with gradient accumulation); docs/memory.md says how"
             " close it comes to measured peaks."]
    if plans[0].settings.processes > 1:
        notes.append(f"per GPU of {plans[0].settings.processes}: the first four parts divided between them, plus the"
                     " units FSDP gathers whole; activations of each GPU's part of the micro-batch.")
    return cols, rows, notes


def fit_lines(plan, capacities_gb: tuple[float, ...], peft=None) -> list[str]:
    """One line per GPU size: fits, or does not and what would make it fit."""
    from peftbench.memory import GB, fit_options

    lines = []
    for size in capacities_gb:
        if plan.total <= size * GB:
            lines.append(f"  {size:g} GB GPU: fits ({plan.total / (size * GB):.0%} of it)")
            continue
        options = "; ".join(fit_options(plan, size * GB, peft)) or "none at this shape"
        if plan.fixed > size * GB:
            instead = "bfloat16 weights" if plan.trainable_params < plan.total_params / 100 else "a PEFT method"
            lines.append(f"  {size:g} GB GPU: does not fit: weights, gradients and AdamW states alone take"
                         f" {plan.fixed / GB:,.1f} GB, so it needs sharding over several GPUs (the suite key"
                         f" sharding: {{processes: N}}) or {instead}; options: {options}")
        else:
            lines.append(f"  {size:g} GB GPU: does not fit; options: {options}")
    return lines
