"""The report's tables, computed from stored configurations in the layouts of the papers: scores and their
statistics (peftbench.report.scores), ablations, convergence, per-parameter and per-minute scores, efficiency,
cost and predictions here, and `all_tables` in the report's order. Each table is plain data (cells with their
raw value and the text shown), so every output format renders the same numbers. Highlights mark the best
trained method of a column only where "best" means something (mark_best)."""

from collections import defaultdict

from peftbench.configurations import RANDOM_WEIGHTS, Config, configs, labels, random_weights
from peftbench.report.configs import (Cell, Table, fmt, fmt_count, mark_best, model_title, range_cell, scale_name, slug,
                                      stat_cell)
from peftbench.report.scores import (Comparison, compare_top_two, find_config, learned_table, model_scale_blocks,
                                     scores_tables, seed_note, significance_table, statistics_table)
from peftbench.run_facts import OTHER
from peftbench.stats import summarise

ABLATION_OPTIONS = {"layers": "all", "modules": "", "drop": ""}  # option: the value that ablates nothing


def per_100k(run: dict) -> float | None:
    """Score per 100k trainable parameters (Pu et al. Table 5)."""
    trainable = run.get("trainable_params")
    return run["score"] / (trainable / 1e5) if trainable and run.get("score") is not None else None


def per_minute(run: dict) -> float | None:
    """Score per minute of training to the best epoch (Pu et al. Table 6 divides by Table 4's times)."""
    seconds = run.get("seconds_to_best")
    return run["score"] / (seconds / 60) if seconds and run.get("score") is not None else None


def is_ablation(options: dict) -> bool:
    return any(str(options.get(key, default) or "") != default for key, default in ABLATION_OPTIONS.items())


def ablation_tables(items: list[Config]) -> list[Table]:
    """Pu et al. Tables 2-3: the families that have ablated variants, their scores and parameter counts."""
    tables = []
    for (model, scale), block in model_scale_blocks(items).items():
        families = {c.runs[0]["method"] for c in block if is_ablation(c.runs[0].get("method_options") or {})}
        chosen = [c for c in block if c.runs[0]["method"] in families]
        if not chosen:
            continue
        tasks = list(dict.fromkeys(c.task for c in chosen))
        rows = []
        for label in labels(chosen):
            found = {c.task: c for c in chosen if c.label == label}
            config = next(iter(found.values()))
            added, changed = config.first("added_params"), config.first("changed_params")
            trainable = config.first("trainable_params")
            rows.append([Cell(label, label), *[stat_cell(found[t].score()) if t in found else Cell("–")
                                               for t in tasks],
                         Cell(fmt_count(trainable), trainable), Cell(fmt_count(added), added),
                         Cell(fmt_count(changed), changed)])
        for column in range(1, len(tasks) + 1):
            mark_best(rows, column)
        notes = [seed_note(chosen), "Parameter counts from `peftbench params` (meta device); added counts new"
                 " tensors, changed counts base-weight entries that differ after merging."]
        tables.append(Table(f"ablations-{slug(model)}-{slug(scale_name(scale))}",
                            f"Ablations: {model_title(model)}, {scale_name(scale)}",
                            ["method", *tasks, "trainable", "added", "changed after merge"], rows,
                            notes + ([RANDOM_WEIGHTS] if random_weights(model) else [])))
    return tables


def _trainedmodel_scale_blocks(items: list[Config]):
    """(model, scale, trained configurations, their tasks) for each block that trained anything."""
    for (model, scale), block in model_scale_blocks(items).items():
        trained = [c for c in block if c.kind == "train"]
        if trained:
            yield model, scale, trained, list(dict.fromkeys(c.task for c in trained))


def convergence_tables(items: list[Config]) -> list[Table]:
    """Pu et al. Table 4: best epoch and seconds to it, and full tuning's speed-up over the PEFT methods."""
    tables = []
    for model, scale, trained, tasks in _trainedmodel_scale_blocks(items):
        rows, seconds = [], defaultdict(dict)
        for label in labels(trained):
            cells = [Cell(label, label)]
            for task in tasks:
                found = find_config(trained, label, task)
                epoch = found.summary(lambda r: r.get("best_epoch")) if found else None
                to_best = found.summary(lambda r: r.get("seconds_to_best")) if found else None
                if to_best:
                    seconds[task][label] = (found.is_reference, to_best.mean)
                cells += [stat_cell(epoch, 1, count=True), stat_cell(to_best, 2)]
            rows.append(cells)
        for column in range(2, 2 * len(tasks) + 1, 2):  # an earlier best epoch is not better: no highlight
            mark_best(rows, column, higher=False, separated=True)
        speedup = [Cell("full tuning speed-up", "full tuning speed-up")]
        for task in tasks:
            full = [s for reference, s in seconds[task].values() if reference]
            peft = [s for reference, s in seconds[task].values() if not reference]
            value = 1 - full[0] / (sum(peft) / len(peft)) if full and peft else None
            speedup += [Cell(""), Cell("–" if value is None else f"{value:.0%}", value)]
        rows.append(speedup)
        columns = ["method", *[f"{task} {what}" for task in tasks for what in ("best epoch", "s to best")]]
        tables.append(Table(f"convergence-{slug(model)}-{slug(scale_name(scale))}",
                            f"Convergence: {model_title(model)}, {scale_name(scale)}", columns, rows,
                            [seed_note(trained), "Bold: fewest seconds to the best epoch, where the lead is larger"
                             " than the seeds' spread. Speed-up is 1 − (full tuning's seconds to best) / (mean of the"
                             " other methods'), as Pu et al. report it in 3.2."]))
    return tables


def ratio_tables(items: list[Config]) -> list[Table]:
    """Pu et al. Tables 5-6: score per 100k trainable parameters and per minute to the best epoch."""
    tables = []
    for model, scale, trained, tasks in _trainedmodel_scale_blocks(items):
        rows = []
        for label in labels(trained):
            cells = [Cell(label, label)]
            for task in tasks:
                found = find_config(trained, label, task)
                cells += [stat_cell(found.summary(per_100k), 4), stat_cell(found.summary(per_minute), 3)] \
                    if found else [Cell("–"), Cell("–")]
            rows.append(cells)
        for column in range(1, 2 * len(tasks) + 1, 2):
            mark_best(rows, column)
        for column in range(2, 2 * len(tasks) + 1, 2):  # minutes are measured: only a lead beyond noise
            mark_best(rows, column, separated=True)
        columns = ["method", *[f"{task} {what}" for task in tasks for what in ("per 100k params", "per minute")]]
        tables.append(Table(f"ratios-{slug(model)}-{slug(scale_name(scale))}",
                            f"Score per 100k trainable parameters and per minute: {model_title(model)},"
                            f" {scale_name(scale)}", columns, rows,
                            [seed_note(trained), "Per run: score / (trainable parameters / 100,000) and score /"
                             " (minutes to the best epoch); then mean ± std over seeds."]))
    return tables


def _throughput_ratio(mine: list[Config], full: dict, key: str) -> Cell:
    """Tokens/s as % of full tuning on the same task and data size, averaged over those; the std is over
    the method's runs (each divided by full tuning's mean there), so a lead can be told from noise."""
    means, per_run = [], []
    for c in mine:
        reference = full.get((c.task, c.n_train))
        theirs = reference and reference.summary(lambda r: r.get(key))
        ours = c.summary(lambda r: r.get(key))
        if ours and theirs:
            means.append(100 * ours.mean / theirs.mean)
            per_run += [100 * run[key] / theirs.mean for run in c.runs if run.get(key)]
    if not means:
        return Cell("–")
    spread = summarise(per_run)
    value = sum(means) / len(means)
    return Cell(fmt(value, 1), value, spread.std if spread else None)


def efficiency_tables(items: list[Config]) -> list[Table]:
    """Lialin et al. Table 5: trainable parameters, peak memory and throughput relative to full tuning.
    Throughput ratios are taken per task and data size (method's mean / full tuning's mean over seeds)
    and then averaged, so a method is compared with full tuning on the same inputs only."""
    tables = []
    by_model: dict[str, list[Config]] = defaultdict(list)
    for config in items:
        if config.kind == "train":
            by_model[config.model].append(config)
    for model, trained in by_model.items():
        full = {(c.task, c.n_train): c for c in trained if c.is_reference}
        rows = []
        for label in labels(trained):
            mine = [c for c in trained if c.label == label]
            runs = [run for c in mine for run in c.runs]
            shares = [100 * run["trainable_params"] / run["total_params"] for run in runs
                      if run.get("trainable_params") is not None and run.get("total_params")]
            memory = summarise([run["peak_memory_bytes"] / 1e9 for run in runs if run.get("peak_memory_bytes")])
            mfu = summarise([100 * run["train_mfu"] for run in runs if run.get("train_mfu")])
            rows.append([Cell(label, label), range_cell([run.get("trainable_params") for run in runs], 3, 1e-6),
                         range_cell(shares, 3), stat_cell(memory, 2),
                         *[_throughput_ratio(mine, full, key) for key in ("train_tokens_per_s", "infer_tokens_per_s")],
                         stat_cell(mfu, 2)])
        references = {c.label for c in trained if c.is_reference}
        not_reference = [row[0].value not in references for row in rows]  # full tuning's 100% is the yardstick
        mark_best(rows, 3, higher=False, separated=True)
        mark_best(rows, 4, eligible=not_reference, separated=True)
        mark_best(rows, 5, eligible=not_reference, separated=True)
        kinds = sorted({run.get("peak_memory_kind") for c in trained for run in c.runs} - {None})
        notes = [f"Peak memory is {', '.join(kinds) or 'not measured'} (cuda_max_allocated on GPU, the process's"
                 " peak resident set on CPU, which includes the Python and torch process itself). Throughput is"
                 " tokens/s as % of full tuning on the same task and data size, averaged over those; – where full"
                 " tuning was not run. Trainable counts are exact: a range means the task's head differs"
                 " (number of labels). Train MFU is the training FLOPs per second (counted by torch's"
                 " FlopCounterMode, flops.py) as % of the device's peak: a GPU's datasheet, a CPU's own matmul"
                 " probe (each run's row names it, peak_source). Bold only where the lead is larger than the runs' spread."]
        tables.append(Table(f"efficiency-{slug(model)}", f"Efficiency: {model_title(model)}",
                            ["method", "trainable (M)", "trainable %", "peak memory (GB)", "train throughput % of full",
                             "inference throughput % of full", "train MFU %"], rows, notes))
    return tables


def forgetting(run: dict) -> float | None:
    return run.get("forgetting")


def forgetting_tables(items: list[Config]) -> list[Table]:
    """HF PEFT method_comparison's forgetting (peftbench.forgetting): the tuned model's loss on a held-out
    general text minus the base model's, per method x task, one block per model and data scale, for the
    text-to-text runs that measured it. Lower is better; below zero the text got likelier."""
    tables = []
    for (model, scale), block in model_scale_blocks(items).items():
        measured = [c for c in block if c.kind == "train" and c.first("forgetting") is not None]
        if not measured:
            continue
        tasks = list(dict.fromkeys(c.task for c in measured))
        rows = []
        for label in labels(measured):
            cells = [Cell(label, label)]
            for task in tasks:
                found = find_config(measured, label, task)
                cells.append(stat_cell(found.summary(forgetting)) if found else Cell("–"))
            rows.append(cells)
        for column in range(1, len(tasks) + 1):
            mark_best(rows, column, higher=False, separated=True)
        before = {fmt(c.first("general_loss_before")) for c in measured}
        text = measured[0].first("general_text") or {}
        tokens = f"{text['tokens']:,}" if isinstance(text.get("tokens"), int) else "?"
        notes = [seed_note(measured),
                 "Forgetting: the mean cross-entropy per token (nats) on a held-out general text after tuning minus"
                 f" the base model's before it ({' / '.join(sorted(before))}), as HF PEFT's method_comparison"
                 " records it; lower is better, below zero the tuned model predicts the text better than the base."
                 f" The text: {text.get('corpus', 'a held-out corpus')} ({text.get('file', '?')},"
                 f" {tokens} tokens scored). Bold only where the lead is larger than the runs' spread."]
        tables.append(Table(f"forgetting-{slug(model)}-{slug(scale_name(scale))}",
                            f"Forgetting: {model_title(model)}, {scale_name(scale)}", ["method", *tasks], rows, notes))
    return tables


def cost_table(items: list[Config]) -> Table | None:
    """Dollars per run where the store knows a price; None when no run has one."""
    priced = [c for c in items if any(run.get("cost_usd") is not None for run in c.runs)]
    if not priced:
        return None
    rows = []
    for c in priced:
        costs = [run["cost_usd"] for run in c.runs if run.get("cost_usd") is not None]
        rows.append([Cell(c.model, c.model), Cell(scale_name(c.scale), str(c.scale)), Cell(c.task, c.task),
                     Cell(c.label, c.label), stat_cell(summarise(costs), 4),
                     Cell(f"{sum(costs):.4f}", sum(costs)), Cell(str(len(costs)), len(costs))])
    return Table("cost", "Cost in dollars", ["model", "scale", "task", "method", "per run (USD)", "all seeds (USD)",
                 "priced runs"], rows, ["Runs without a known price are left out of the sums. A run's cost is its"
                                        " wall time (load, training, evaluation) at the machine's price."])


def prediction_tables(items: list[Config]) -> list[Table]:
    """Hamilton & Mueller Table 4: how often each label, and an answer naming none ('<other>'), was
    predicted, for classification by a text-to-text model (which can answer outside the labels)."""
    tables = []
    blocks: dict[tuple, list[Config]] = defaultdict(list)
    generative = _generative(items)
    for c in items:
        counts = c.runs[0].get("metrics", {}).get("prediction_counts")
        if counts and c.model in generative:
            blocks[(c.model, c.task, c.scale)].append(c)
    for (model, task, scale), block in blocks.items():
        answers = answer_order(block[0].runs[0]["metrics"]["prediction_counts"])
        rows = []
        for c in block:
            cells = [Cell(c.label, c.label)]
            for answer in answers:
                cells.append(stat_cell(c.summary(lambda r: r["metrics"]["prediction_counts"].get(answer, 0)),
                                       count=True))
            cells.append(stat_cell(c.summary(lambda r: r["metrics"].get("other_rate")), 3))
            rows.append(cells)
        n_test = block[0].runs[0]["metrics"].get("n_test")
        tables.append(Table(f"predictions-{slug(model)}-{slug(task)}-{slug(scale_name(scale))}",
                            f"Prediction counts: {model_title(model)}, {task}, {scale_name(scale)}",
                            ["method", *answers, "other rate"], rows,
                            [f"Count out of {n_test} test rows (mean over seeds where there are several); '<other>'"
                             " is an answer that names no label."]))
    return tables


def answer_order(counts: dict) -> list[str]:
    """The labels, then '<other>' last (the store keeps them sorted, which puts '<other>' first)."""
    return [*(answer for answer in counts if answer != OTHER), *([OTHER] if OTHER in counts else [])]


def _generative(items: list[Config]) -> set[str]:
    """The models whose runs recorded a family that generates (decoder, seq2seq), or recorded none."""
    families: dict[str, set] = defaultdict(set)
    for config in items:
        families[config.model] |= {run.get("family") for run in config.runs}
    return {model for model, found in families.items() if found - {None} != {"encoder"}}


def all_tables(rows: list[dict]) -> tuple[list[Table], list[Config], list[Comparison]]:
    from peftbench.report.runs import runs_table

    items = configs(rows)
    comparisons = compare_top_two(items)
    tables = [*scores_tables(items, comparisons), statistics_table(items), learned_table(items),
              significance_table(comparisons),
              *ablation_tables(items), *convergence_tables(items), *ratio_tables(items), *efficiency_tables(items),
              *forgetting_tables(items)]
    if (cost := cost_table(items)) is not None:
        tables.append(cost)
    tables += [*prediction_tables(items), runs_table(rows)]
    return tables, items, comparisons
