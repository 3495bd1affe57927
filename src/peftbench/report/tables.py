"""The report's tables, computed from stored rows in the layouts of the papers. Each table is plain data
(cells with their raw value and the text shown), so every output format renders the same numbers."""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from peftbench.report.stats import Paired, Summary, paired_bootstrap, summarise
from peftbench.sweep import final_rows

# Spec keys that make two runs of one method spec different configurations; runs that differ only in
# their seed are the same configuration, and their scores are averaged.
VARIANT_KEYS = ("lr", "epochs", "batch_size", "grad_accum", "peak_factor", "final_factor", "warmup_ratio",
                "patience", "max_minutes", "weight_decay", "max_grad_norm", "max_input_length",
                "max_target_length", "eval", "split_seed", "val_cap", "test_cap", "group_by_length")
ABLATION_OPTIONS = {"layers": "all", "modules": "", "drop": ""}  # option: the value that ablates nothing


@dataclass
class Cell:
    text: str
    value: float | str | None = None  # the raw number (or text) a CSV holds
    std: float | None = None
    best: bool = False


@dataclass
class Table:
    key: str  # file name and HTML anchor
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)


@dataclass
class Config:
    """One configuration (model, task, data size, method spec, hyper-parameters) and its finished seeds."""

    model: str
    task: str
    scale: object
    n_train: int
    method_spec: str
    kind: str
    runs: list[dict]
    label: str = ""

    @property
    def seeds(self) -> int:
        return len(self.runs)

    def summary(self, value: Callable[[dict], float | None]) -> Summary | None:
        return summarise([value(run) for run in self.runs])

    def first(self, key: str):
        return next((run[key] for run in self.runs if run.get(key) is not None), None)


def scale_name(scale) -> str:
    return str(scale) if isinstance(scale, str) else f"n={scale}"


def score(run: dict) -> float | None:
    return run.get("score")


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


def configs(rows: list[dict]) -> list[Config]:
    """Finished runs grouped over seeds, in the order they were first stored (baselines first, then full).
    A method spec that appears with different hyper-parameters for the same model, task and data size
    gets them in its label, e.g. `lora (lr=0.001)`."""
    groups: dict[tuple, Config] = {}
    for row in final_rows([row for row in rows if row.get("status") == "finished"]):
        key = (row["model"], row["task"], row["n_train"], row["method_spec"], row["kind"],
               tuple(str(row.get(name)) for name in VARIANT_KEYS))
        if key not in groups:
            groups[key] = Config(row["model"], row["task"], row["scale"], row["n_train"], row["method_spec"],
                                 row["kind"], [])
        groups[key].runs.append(row)
    siblings: dict[tuple, list[tuple]] = defaultdict(list)
    for key in groups:
        siblings[key[:5]].append(key)
    for key, config in groups.items():
        differing = [name for i, name in enumerate(VARIANT_KEYS)
                     if len({other[5][i] for other in siblings[key[:5]]}) > 1]
        suffix = ", ".join(f"{name}={config.first(name)}" for name in differing)
        config.label = f"{config.method_spec} ({suffix})" if suffix else config.method_spec
    ordered = list(groups.values())
    ordered.sort(key=lambda c: (c.kind != "baseline", c.method_spec != "full"))  # stable: storage order otherwise
    return ordered


def _labels(items: list[Config]) -> list[str]:
    return list(dict.fromkeys(config.label for config in items))


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.2g}"  # two significant digits rather than a row of zeros
    return f"{value:,.{digits}f}"


def stat_cell(summary: Summary | None, digits: int = 3, scale: float = 1.0) -> Cell:
    if summary is None:
        return Cell("–")
    mean, std = summary.mean * scale, None if summary.std is None else summary.std * scale
    text = _fmt(mean, digits) + ("" if std is None else f" ± {_fmt(std, digits)}")
    return Cell(text, mean, std)


def mark_best(rows: list[list[Cell]], column: int, higher: bool = True) -> None:
    """Bold the best value of a column (every cell holding it, for ties)."""
    values = [row[column].value for row in rows if isinstance(row[column].value, (int, float))]
    if not values:
        return
    best = max(values) if higher else min(values)
    for row in rows:
        if row[column].value == best:
            row[column].best = True


def _blocks(items: list[Config]) -> dict[tuple[str, object], list[Config]]:
    """Pu et al.'s layout: one block per model and data scale."""
    blocks: dict[tuple[str, object], list[Config]] = defaultdict(list)
    for config in items:
        blocks[(config.model, config.scale)].append(config)
    return blocks


def _seed_note(items: list[Config]) -> str:
    seeds = sorted({config.seeds for config in items if config.kind == "train"})
    if seeds == [1]:
        return ("One seed per configuration: no std or interval can be given, and a difference between"
                " methods may be seed noise.")
    return f"Mean ± sample std over seeds ({'/'.join(map(str, seeds))} per configuration); 95% intervals in" \
           " the statistics table."


def per_example(config: Config) -> list[float] | None:
    """Per-test-row score averaged over the configuration's seeds; None if a run lacks it or the runs
    were not tested on the same rows (their data digests differ)."""
    records = [run.get("metrics", {}).get("per_example") for run in config.runs]
    digests = {(run.get("data_digest") or {}).get("test") for run in config.runs}
    if any(record is None for record in records) or len(digests) != 1 or len({len(r) for r in records}) != 1:
        return None
    return [sum(values) / len(values) for values in zip(*records)]


@dataclass
class Comparison:
    model: str
    scale: object
    task: str
    first: Config
    second: Config
    paired: Paired | None
    reason: str = ""

    @property
    def verdict(self) -> str:
        if self.paired is None:
            return f"no paired test: {self.reason}"
        return "significantly different" if self.paired.significant else "not significantly different"


def compare_top_two(items: list[Config]) -> list[Comparison]:
    """For each block and task, the two trained configurations with the best mean score, compared by a
    paired bootstrap on their shared test rows."""
    comparisons = []
    for (model, scale), block in _blocks(items).items():
        for task in dict.fromkeys(config.task for config in block):
            ranked = sorted((c for c in block if c.task == task and c.kind == "train" and c.summary(score)),
                            key=lambda c: -c.summary(score).mean)
            if len(ranked) < 2:
                continue
            first, second = ranked[:2]
            a, b = per_example(first), per_example(second)
            digest = lambda c: (c.runs[0].get("data_digest") or {}).get("test")
            if a is None or b is None:
                comparisons.append(Comparison(model, scale, task, first, second, None,
                                              "runs stored without per-example results"))
            elif digest(first) != digest(second) or len(a) != len(b):
                comparisons.append(Comparison(model, scale, task, first, second, None, "test rows differ"))
            else:
                comparisons.append(Comparison(model, scale, task, first, second, paired_bootstrap(a, b)))
    return comparisons


def scores_tables(items: list[Config], comparisons: list[Comparison]) -> list[Table]:
    """Pu et al. Table 1: score per method x task, one block per model and data scale."""
    tables = []
    for (model, scale), block in _blocks(items).items():
        tasks = list(dict.fromkeys(config.task for config in block))
        metric = {c.task: c.first("primary_metric") for c in block}
        rows = []
        for label in _labels(block):
            cells = [Cell(label, label)]
            for task in tasks:
                found = _find(block, label, task)
                cells.append(stat_cell(found.summary(score)) if found else Cell("–"))
            rows.append(cells)
        for column in range(1, len(tasks) + 1):
            mark_best(rows, column)
        notes = [_seed_note(block), "Best per column in bold. Metric: "
                 + ", ".join(f"{task} {metric[task]}" for task in tasks) + "."]
        for comparison in comparisons:
            if (comparison.model, comparison.scale) == (model, scale):
                notes.append(_comparison_sentence(comparison))
        tables.append(Table(f"scores-{_slug(model)}-{_slug(scale_name(scale))}",
                            f"Scores: {model}, {scale_name(scale)}", ["method", *tasks], rows, notes))
    return tables


def _comparison_sentence(comparison: Comparison) -> str:
    first, second, paired = comparison.first.label, comparison.second.label, comparison.paired
    head = f"{comparison.task}: top two {first} vs {second}"
    if paired is None:
        return f"{head}: {comparison.verdict}."
    return (f"{head}: {comparison.verdict} (paired bootstrap over {paired.n_rows} test rows: difference"
            f" {paired.difference:+.3f}, 95% interval [{paired.low:+.3f}, {paired.high:+.3f}], p = {paired.p_value:.3f}).")


def statistics_table(items: list[Config]) -> Table:
    rows = []
    for config in items:
        summary = config.summary(score)
        if summary is None:
            continue
        rows.append([Cell(config.model, config.model), Cell(scale_name(config.scale), str(config.scale)),
                     Cell(config.task, config.task), Cell(config.label, config.label),
                     Cell(str(config.n_train), config.n_train), Cell(str(summary.n), summary.n),
                     Cell(_fmt(summary.mean), summary.mean), Cell(_fmt(summary.std), summary.std),
                     Cell(_fmt(summary.low), summary.low), Cell(_fmt(summary.high), summary.high)])
    return Table("statistics", "Statistics over seeds", ["model", "scale", "task", "method", "n_train", "seeds",
                 "mean", "std", "95% low", "95% high"], rows,
                 ["Std is the sample standard deviation; the 95% interval is Student's t over seeds. Both need"
                  " at least two seeds (– otherwise)."])


def significance_table(comparisons: list[Comparison]) -> Table:
    rows = []
    for c in comparisons:
        p = c.paired
        rows.append([Cell(c.model, c.model), Cell(scale_name(c.scale), str(c.scale)), Cell(c.task, c.task),
                     Cell(c.first.label, c.first.label), Cell(c.second.label, c.second.label),
                     Cell(_fmt(p and p.difference), p and p.difference), Cell(_fmt(p and p.low), p and p.low),
                     Cell(_fmt(p and p.high), p and p.high), Cell(_fmt(p and p.p_value), p and p.p_value),
                     Cell(c.verdict, c.verdict)])
    return Table("significance", "Top two per block: paired bootstrap", ["model", "scale", "task", "first",
                 "second", "difference", "95% low", "95% high", "p", "verdict"], rows,
                 ["Resampling the shared test rows (per row: 0/1 correct for classification, ROUGE-L for"
                  " generation, averaged over seeds) gives the interval of the difference in mean; where it"
                  " contains 0 the two are not significantly different."])


def ablation_tables(items: list[Config]) -> list[Table]:
    """Pu et al. Tables 2-3: the families that have ablated variants, their scores and parameter counts."""
    from peftbench.accounting import count

    tables = []
    for (model, scale), block in _blocks(items).items():
        families = {c.runs[0]["method"] for c in block if is_ablation(c.runs[0].get("method_options") or {})}
        chosen = [c for c in block if c.runs[0]["method"] in families]
        if not chosen:
            continue
        tasks = list(dict.fromkeys(c.task for c in chosen))
        rows = []
        for label in _labels(chosen):
            found = {c.task: c for c in chosen if c.label == label}
            config = next(iter(found.values()))
            try:
                counted = count(model, config.method_spec, config.runs[0]["seed"])
                added, changed = counted.added, counted.changed
            except Exception:  # a model whose config cannot be read here: stored trainable counts only
                added = changed = None
            trainable = config.first("trainable_params")
            rows.append([Cell(label, label), *[stat_cell(found[t].summary(score)) if t in found else Cell("–")
                                               for t in tasks],
                         Cell(_fmt(trainable, 0), trainable), Cell(_fmt(added, 0), added),
                         Cell(_fmt(changed, 0), changed)])
        for column in range(1, len(tasks) + 1):
            mark_best(rows, column)
        tables.append(Table(f"ablations-{_slug(model)}-{_slug(scale_name(scale))}",
                            f"Ablations: {model}, {scale_name(scale)}",
                            ["method", *tasks, "trainable", "added", "changed after merge"], rows,
                            [_seed_note(chosen), "Parameter counts from `peftbench params` (meta device); added"
                             " counts new tensors, changed counts base-weight entries that differ after merging."]))
    return tables


def _trained_blocks(items: list[Config]):
    """(model, scale, trained configurations, their tasks) for each block that trained anything."""
    for (model, scale), block in _blocks(items).items():
        trained = [c for c in block if c.kind == "train"]
        if trained:
            yield model, scale, trained, list(dict.fromkeys(c.task for c in trained))


def _find(configs: list[Config], label: str, task: str) -> Config | None:
    return next((c for c in configs if c.label == label and c.task == task), None)


def convergence_tables(items: list[Config]) -> list[Table]:
    """Pu et al. Table 4: best epoch and seconds to it, and full tuning's speed-up over the PEFT methods."""
    tables = []
    for model, scale, trained, tasks in _trained_blocks(items):
        rows, seconds = [], defaultdict(dict)
        for label in _labels(trained):
            cells = [Cell(label, label)]
            for task in tasks:
                found = _find(trained, label, task)
                epoch = found.summary(lambda r: r.get("best_epoch")) if found else None
                to_best = found.summary(lambda r: r.get("seconds_to_best")) if found else None
                if to_best:
                    seconds[task][label] = (found.method_spec, to_best.mean)
                cells += [stat_cell(epoch, 1), stat_cell(to_best, 2)]
            rows.append(cells)
        for column in range(1, 2 * len(tasks) + 1):
            mark_best(rows, column, higher=False)
        speedup = [Cell("full tuning speed-up", "full tuning speed-up")]
        for task in tasks:
            full = [s for spec, s in seconds[task].values() if spec == "full"]
            peft = [s for spec, s in seconds[task].values() if spec != "full"]
            value = 1 - full[0] / (sum(peft) / len(peft)) if full and peft else None
            speedup += [Cell(""), Cell("–" if value is None else f"{value:.0%}", value)]
        rows.append(speedup)
        columns = ["method", *[f"{task} {what}" for task in tasks for what in ("best epoch", "s to best")]]
        tables.append(Table(f"convergence-{_slug(model)}-{_slug(scale_name(scale))}",
                            f"Convergence: {model}, {scale_name(scale)}", columns, rows,
                            [_seed_note(trained), "Lowest per column in bold. Speed-up is 1 − (full tuning's"
                             " seconds to best) / (mean of the other methods'), as Pu et al. report it in 3.2."]))
    return tables


def ratio_tables(items: list[Config]) -> list[Table]:
    """Pu et al. Tables 5-6: score per 100k trainable parameters and per minute to the best epoch."""
    tables = []
    for model, scale, trained, tasks in _trained_blocks(items):
        rows = []
        for label in _labels(trained):
            cells = [Cell(label, label)]
            for task in tasks:
                found = _find(trained, label, task)
                cells += [stat_cell(found.summary(per_100k), 4), stat_cell(found.summary(per_minute), 3)] \
                    if found else [Cell("–"), Cell("–")]
            rows.append(cells)
        for column in range(1, 2 * len(tasks) + 1):
            mark_best(rows, column)
        columns = ["method", *[f"{task} {what}" for task in tasks for what in ("per 100k params", "per minute")]]
        tables.append(Table(f"ratios-{_slug(model)}-{_slug(scale_name(scale))}",
                            f"Score per 100k trainable parameters and per minute: {model}, {scale_name(scale)}",
                            columns, rows, [_seed_note(trained), "Per run: score / (trainable parameters / 100,000)"
                                            " and score / (minutes to the best epoch); then mean ± std over seeds."]))
    return tables


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
        full = {(c.task, c.n_train): c for c in trained if c.method_spec == "full"}
        rows = []
        for label in _labels(trained):
            mine = [c for c in trained if c.label == label]
            runs = [run for c in mine for run in c.runs]
            trainable = summarise([run.get("trainable_params") for run in runs])
            share = summarise([100 * run["trainable_params"] / run["total_params"] for run in runs
                               if run.get("trainable_params") is not None and run.get("total_params")])
            memory = summarise([run["peak_memory_bytes"] / 1e9 for run in runs if run.get("peak_memory_bytes")])
            cells = [Cell(label, label), stat_cell(trainable, 3, 1e-6), stat_cell(share, 3), stat_cell(memory, 2)]
            for key in ("train_tokens_per_s", "infer_tokens_per_s"):
                ratios = []
                for c in mine:
                    reference = full.get((c.task, c.n_train))
                    ours, theirs = c.summary(lambda r: r.get(key)), reference and reference.summary(lambda r: r.get(key))
                    if ours and theirs:
                        ratios.append(100 * ours.mean / theirs.mean)
                value = sum(ratios) / len(ratios) if ratios else None
                cells.append(Cell(_fmt(value, 1), value))
            rows.append(cells)
        mark_best(rows, 3, higher=False)
        mark_best(rows, 4)
        mark_best(rows, 5)
        kinds = sorted({run.get("peak_memory_kind") for c in trained for run in c.runs} - {None})
        tables.append(Table(f"efficiency-{_slug(model)}", f"Efficiency: {model}",
                            ["method", "trainable (M)", "trainable %", "peak memory (GB)", "train throughput % of full",
                             "inference throughput % of full"], rows,
                            [f"Peak memory is {', '.join(kinds) or 'not measured'} (cuda_max_allocated on GPU, the"
                             " process's peak resident set on CPU). Throughput is tokens/s as % of full tuning on the"
                             " same task and data size, averaged over those; – where full tuning was not run."]))
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
    mark_best(rows, 4, higher=False)
    return Table("cost", "Cost in dollars", ["model", "scale", "task", "method", "per run (USD)", "all seeds (USD)",
                 "priced runs"], rows, ["Runs without a known price are left out of the sums."])


def prediction_tables(items: list[Config]) -> list[Table]:
    """Hamilton & Mueller Table 4: how often each label, and an answer naming none ('<other>'), was
    predicted, for classification by a text-to-text model (which can answer outside the labels)."""
    tables = []
    blocks: dict[tuple, list[Config]] = defaultdict(list)
    for c in items:
        counts = c.runs[0].get("metrics", {}).get("prediction_counts")
        if counts and _generative(c.model):
            blocks[(c.model, c.task, c.scale)].append(c)
    for (model, task, scale), block in blocks.items():
        answers = answer_order(block[0].runs[0]["metrics"]["prediction_counts"])
        rows = []
        for c in block:
            cells = [Cell(c.label, c.label)]
            for answer in answers:
                cells.append(stat_cell(c.summary(lambda r: r["metrics"]["prediction_counts"].get(answer, 0)), 1))
            cells.append(stat_cell(c.summary(lambda r: r["metrics"].get("other_rate")), 3))
            rows.append(cells)
        n_test = block[0].runs[0]["metrics"].get("n_test")
        tables.append(Table(f"predictions-{_slug(model)}-{_slug(task)}-{_slug(scale_name(scale))}",
                            f"Prediction counts: {model}, {task}, {scale_name(scale)}",
                            ["method", *answers, "other rate"], rows,
                            [f"Mean count over seeds out of {n_test} test rows; '<other>' is an answer that names no label."]))
    return tables


def answer_order(counts: dict) -> list[str]:
    """The labels, then '<other>' last (the store keeps them sorted, which puts '<other>' first)."""
    from peftbench.evaluate import OTHER

    return [*(answer for answer in counts if answer != OTHER), *([OTHER] if OTHER in counts else [])]


def _generative(model: str) -> bool:
    from peftbench.models import model_family, resolve

    try:
        return model_family(resolve(model)) != "encoder"
    except Exception:  # config not readable here (e.g. offline, uncached hub model): show its counts anyway
        return True


def runs_table(rows: list[dict]) -> Table:
    """One line per stored run, unfinished ones with their status and error."""
    columns = ["task", "model", "method", "n", "seed", "metric", "score", "trainable", "best epoch", "stopped by",
               "train tok/s", "infer tok/s", "peak MB", "wall s"]
    lines = []
    for row in sorted(rows, key=lambda r: (r["task"], r["model"], r["n_train"], r["kind"] != "baseline",
                                           r["method_spec"], r["seed"])):
        head = [Cell(row["task"], row["task"]), Cell(row["model"], row["model"]),
                Cell(row["method_spec"], row["method_spec"]), Cell(str(row["n_train"]), row["n_train"]),
                Cell(str(row["seed"]), row["seed"])]
        if row["status"] != "finished":
            error = (row.get("error") or "")[:60]
            lines.append([*head, Cell(""), Cell(row["status"], row["status"]), Cell(""), Cell(""),
                          Cell(error, error), *[Cell("")] * 4])
            continue
        total, trainable, peak = row.get("total_params"), row.get("trainable_params"), row.get("peak_memory_bytes")
        share = trainable / total if total and trainable is not None else None
        values = [(row["primary_metric"], row["primary_metric"]), (_fmt(row.get("score")), row.get("score")),
                  ("–" if share is None else f"{share:.2%}", share),
                  (str(row.get("best_epoch", "–")), row.get("best_epoch")),
                  (row.get("stopped_by", "–"), row.get("stopped_by")),
                  (_fmt(row.get("train_tokens_per_s"), 0), row.get("train_tokens_per_s")),
                  (_fmt(row.get("infer_tokens_per_s"), 0), row.get("infer_tokens_per_s")),
                  (_fmt(peak / 2**20 if peak else None, 0), peak / 2**20 if peak else None),
                  (_fmt(row.get("wall_s"), 1), row.get("wall_s"))]
        lines.append([*head, *[Cell(text, value) for text, value in values]])
    return Table("runs", "All runs", columns, lines,
                 ["Baselines: `majority` predicts the most frequent training label; `zero_shot` evaluates the"
                  " untrained model. Peak MB is CUDA max_memory_allocated on GPU and the process's peak resident"
                  " set on CPU. Unfinished runs show their status and error."])


def _slug(text) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in str(text).lower()).strip("-")


def all_tables(rows: list[dict]) -> tuple[list[Table], list[Config], list[Comparison]]:
    items = configs(rows)
    comparisons = compare_top_two(items)
    tables = [*scores_tables(items, comparisons), statistics_table(items), significance_table(comparisons),
              *ablation_tables(items), *convergence_tables(items), *ratio_tables(items), *efficiency_tables(items)]
    if (cost := cost_table(items)) is not None:
        tables.append(cost)
    tables += [*prediction_tables(items), runs_table(rows)]
    return tables, items, comparisons
