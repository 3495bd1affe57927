"""The report's score tables (Pu et al. Table 1 per model and data size, every configuration's statistics over
seeds) and the paired bootstrap of each block's top two; the blocks and notes the other tables share."""

import math
from collections import defaultdict
from dataclasses import dataclass

from peftbench.configurations import RANDOM_WEIGHTS, Config, labels, random_weights
from peftbench.report.configs import Cell, Table, fmt, fmt_count, mark_best, model_title, scale_name, slug, stat_cell
from peftbench.stats import Paired, paired_bootstrap


def model_scale_blocks(items: list[Config]) -> dict[tuple[str, object], list[Config]]:
    """Pu et al.'s layout: one block per model and data scale."""
    blocks: dict[tuple[str, object], list[Config]] = defaultdict(list)
    for config in items:
        blocks[(config.model, config.scale)].append(config)
    return blocks


def seed_note(items: list[Config]) -> str:
    seeds = sorted({config.seeds for config in items if config.kind == "train"})
    if seeds == [1]:
        return ("One seed per configuration: no std or interval can be given, and a difference between"
                " methods may be seed noise.")
    return f"Mean ± sample std over seeds ({'/'.join(map(str, seeds))} per configuration); 95% intervals in" \
           " the statistics table."


def lr_note(items: list[Config]) -> str | None:
    """The learning rates as they act: `lr` is where warm-up starts, and it climbs to lr x peak_factor."""
    texts = {c.label: c.lr_text() for c in items if c.kind == "train" and c.lr_text()}
    if not texts:
        return None
    return "Learning rate (start → peak after warm-up): " + "; ".join(f"{label} {text}" for label, text in texts.items()) + "."


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
    paired bootstrap on their shared test rows. Random-weight models get no test: nothing about the
    methods could follow from it."""
    comparisons = []
    for (model, scale), block in model_scale_blocks(items).items():
        for task in dict.fromkeys(config.task for config in block):
            ranked = sorted((c for c in block if c.task == task and c.kind == "train" and c.score()),
                            key=lambda c: -c.score().mean)
            if len(ranked) < 2:
                continue
            first, second = ranked[:2]
            a, b = first.per_row(), second.per_row()
            if random_weights(model):
                comparisons.append(Comparison(model, scale, task, first, second, None, "random-weight model"))
            elif a is None or b is None:
                comparisons.append(Comparison(model, scale, task, first, second, None,
                                              "runs stored without per-example results"))
            elif first.test_digest != second.test_digest or len(a) != len(b):
                comparisons.append(Comparison(model, scale, task, first, second, None, "test rows differ"))
            else:
                comparisons.append(Comparison(model, scale, task, first, second, paired_bootstrap(a, b)))
    return comparisons


def find_config(items: list[Config], label: str, task: str) -> Config | None:
    return next((c for c in items if c.label == label and c.task == task), None)


def _trained(rows: list[list[Cell]], block: list[Config]) -> list[bool]:
    """Per table row (one per label): whether it is a trained method, the only candidates for "best"."""
    kinds = {c.label: c.kind for c in block}
    return [kinds.get(row[0].value) == "train" for row in rows]


def scores_tables(items: list[Config], comparisons: list[Comparison]) -> list[Table]:
    """Pu et al. Table 1: score per method x task, one block per model and data scale."""
    tables = []
    for (model, scale), block in model_scale_blocks(items).items():
        tasks = list(dict.fromkeys(config.task for config in block))
        metric = {c.task: c.metric for c in block}
        rows = []
        for label in labels(block):
            cells = [Cell(label, label)]
            for task in tasks:
                found = find_config(block, label, task)
                cells.append(_score_cell(found) if found else Cell("–"))
            rows.append(cells)
        for column in range(1, len(tasks) + 1):
            mark_best(rows, column, eligible=_trained(rows, block))
        notes = [seed_note(block), "Best trained method per column in bold (baselines are references, not"
                 " candidates). Metric: " + ", ".join(f"{task} {metric[task]}" for task in tasks) + "."]
        if any(c.learning and c.learning.excluded for c in block):
            notes.append(f"{NOT_LEARNED_MARK} did not learn: not significantly above the best baseline (the table"
                         " \"Did each configuration learn?\" says by how much); never recommended.")
        notes += [RANDOM_WEIGHTS] if random_weights(model) else []
        notes += [n for n in [lr_note(block)] if n]
        notes += [comparison_sentence(c) for c in comparisons if (c.model, c.scale) == (model, scale)]
        tables.append(Table(f"scores-{slug(model)}-{slug(scale_name(scale))}",
                            f"Scores: {model_title(model)}, {scale_name(scale)}", ["method", *tasks], rows, notes))
    return tables


NOT_LEARNED_MARK = "†"


def _score_cell(config: Config) -> Cell:
    """Mean ± std over seeds, marked where the configuration did not learn."""
    cell = stat_cell(config.score())
    if config.learning and config.learning.excluded:
        cell.text += f" {NOT_LEARNED_MARK}"
    return cell


def learned_table(items: list[Config]) -> Table:
    """Each trained configuration against the best baseline of its model, task and data size, as
    peftbench.learning judged it: Hamilton & Mueller's question, does a method beat the baseline, per block."""
    rows = []
    trained = [c for c in items if c.kind == "train"]
    trained.sort(key=lambda c: (c.model, c.task, c.n_train, -c.score().mean if c.score() else math.inf))
    for config in trained:
        learning, score = config.learning, config.score()
        paired = learning.paired
        rows.append([Cell(config.model, config.model), Cell(config.task, config.task),
                     Cell(scale_name(config.scale), str(config.scale)), Cell(config.label, config.label),
                     Cell(fmt(score and score.mean), score and score.mean), Cell(learning.baseline or "–", learning.baseline),
                     Cell(fmt(learning.baseline_score), learning.baseline_score),
                     *[Cell(fmt(value), value) for value in (paired and paired.difference, paired and paired.low,
                                                             paired and paired.high)],
                     Cell(learning.headline, learning.headline)])
    return Table("learned", "Did each configuration learn? Against the best baseline",
                 ["model", "task", "scale", "method", "score", "best baseline", "baseline score", "difference",
                  "95% low", "95% high", "verdict"], rows,
                 ["A configuration learned when its score is significantly above that of the best baseline (majority"
                  " answer or zero-shot model) of its model, task and data size: the 95% interval of the difference,"
                  " resampling the test rows both were scored on together (a paired bootstrap, 2,000 resamples; per"
                  " row 0/1 correct or ROUGE-L, averaged over seeds), lies above 0. One that did not learned nothing"
                  " usable: it is marked in every table and never recommended. Not checked: random-weight models (no"
                  " significance is claimed for them), blocks without a baseline, and runs stored without per-row"
                  " results or scored by a metric that is no mean over rows (MCC, F1), unless their score is not"
                  " above the baseline's at all: those did not learn."])


def comparison_sentence(comparison: Comparison) -> str:
    first, second, paired = comparison.first.label, comparison.second.label, comparison.paired
    head = f"{comparison.task}: top two {first} vs {second}"
    if paired is None:
        return f"{head}: {comparison.verdict}."
    one_seed = " With one seed this covers the test rows' sampling, not seed-to-seed variation." \
        if comparison.first.seeds == 1 or comparison.second.seeds == 1 else ""
    return (f"{head}: {comparison.verdict} (paired bootstrap over {paired.n_rows} test rows: difference"
            f" {paired.difference:+.3f}, 95% interval [{paired.low:+.3f}, {paired.high:+.3f}],"
            f" p = {paired.p_value:.3f}).{one_seed}")


def statistics_table(items: list[Config]) -> Table:
    """Every configuration's score over seeds, sorted by model, task and data size, best first."""
    rows = []
    scored = [(c, c.score()) for c in items if c.score() is not None]
    scored.sort(key=lambda pair: (pair[0].model, pair[0].task, pair[0].n_train, pair[0].kind != "baseline",
                                  -pair[1].mean))
    for config, summary in scored:
        rows.append([Cell(config.model, config.model), Cell(config.task, config.task),
                     Cell(scale_name(config.scale), str(config.scale)), Cell(config.label, config.label),
                     Cell(fmt_count(config.n_train), config.n_train), Cell(str(summary.n), summary.n),
                     Cell(fmt(summary.mean), summary.mean), Cell(fmt(summary.std), summary.std),
                     Cell(fmt(summary.low), summary.low), Cell(fmt(summary.high), summary.high)])
    notes = ["Std is the sample standard deviation; the 95% interval is Student's t over seeds, clipped to the"
             " metric's range (accuracy, F1 and ROUGE lie in [0, 1], MCC in [-1, 1]). Both need at least two"
             " seeds (– otherwise)."]
    randoms = sorted({c.model for c in items if random_weights(c.model)})
    if randoms:
        notes.append(f"{', '.join(randoms)}: {RANDOM_WEIGHTS}")
    return Table("statistics", "Statistics over seeds", ["model", "task", "scale", "method", "n_train", "seeds",
                 "mean", "std", "95% low", "95% high"], rows, notes)


def significance_table(comparisons: list[Comparison]) -> Table:
    rows = []
    for c in comparisons:
        p = c.paired
        rows.append([Cell(c.model, c.model), Cell(scale_name(c.scale), str(c.scale)), Cell(c.task, c.task),
                     Cell(c.first.label, c.first.label), Cell(c.second.label, c.second.label),
                     Cell(fmt(p and p.difference), p and p.difference), Cell(fmt(p and p.low), p and p.low),
                     Cell(fmt(p and p.high), p and p.high), Cell(fmt(p and p.p_value), p and p.p_value),
                     Cell(c.verdict, c.verdict)])
    return Table("significance", "Top two per block: paired bootstrap", ["model", "scale", "task", "first",
                 "second", "difference", "95% low", "95% high", "p", "verdict"], rows,
                 ["Resampling the shared test rows (per row: 0/1 correct for classification, ROUGE-L for"
                  " generation, averaged over seeds) gives the interval of the difference in mean; where it"
                  " contains 0 the two are not significantly different. Random-weight models are not tested."])
