"""One row per configuration: the terminal view of `peftbench results` and of the grid `peftbench run` ends
with. A table per model × task × data size, best first, the baselines among the methods, each trained
configuration's mark on whether it learned (peftbench.learning) and, under the table, why where it did not or
was not checked. `results --seeds` lists one row per run instead (peftbench.report.runs)."""

from peftbench.configurations import Config, configs, fmt_lr, random_weights
from peftbench.learning import NOT_CHECKED
from peftbench.report.configs import fmt, fmt_count, scale_name, stat_cell
from peftbench.terminal import Col, clock

# The score's header is the block's metric. Optional columns are left out, last first, when a table does not fit.
COLUMNS = [Col("method", "name"), Col("seeds", "number"), Col("score", "number"), Col("learned", "name"),
           Col("time", "number", optional=True), Col("trainable", "number", optional=True),
           Col("best epoch", "number", optional=True), Col("peak MB", "number", optional=True),
           Col("lr", "number", optional=True), Col("peak lr", "number", optional=True),
           Col("train tok/s", "number", optional=True), Col("infer tok/s", "number", optional=True)]
LEGEND = ("learned: yes, significantly above the best baseline on the same test rows (paired bootstrap, 95%);"
          " NO, not: it learned nothing usable and is never recommended; unchecked, not testable (why: under its"
          " table). Score: mean ± sample std over seeds; time, peak MB, tok/s: means. `peftbench results --seeds`"
          " lists every run with its id.")


def _mean(config: Config, key: str) -> float | None:
    summary = config.summary(lambda run: run.get(key))
    return summary and summary.mean


def _line(config: Config) -> list[str]:
    trainable, total = config.first("trainable_params"), config.first("total_params")
    peak, lr = _mean(config, "peak_memory_bytes"), config.first("lr")
    peak_factor = config.first("peak_factor")
    return [config.label, str(config.seeds), stat_cell(config.score()).text,
            config.learning.mark if config.learning else "baseline", clock(_mean(config, "wall_s")),
            "–" if trainable is None or not total else f"{trainable / total:.2%}",
            fmt_count(_mean(config, "best_epoch")), fmt(peak and peak / 2**20, 0),
            "–" if lr is None else fmt_lr(lr), "–" if lr is None or peak_factor is None else fmt_lr(lr * peak_factor),
            fmt(_mean(config, "train_tokens_per_s"), 0), fmt(_mean(config, "infer_tokens_per_s"), 0)]


def _notes(block: list[Config], unfinished: list[dict]) -> list[str]:
    """Why a configuration did not learn or was not checked (one line per reason), and the runs that did not
    finish, with their errors."""
    notes = [f"{c.label}: {c.learning.reason}." for c in block if c.learning and c.learning.excluded]
    unchecked: dict[str, list[str]] = {}
    for config in block:
        if config.learning and config.learning.verdict == NOT_CHECKED:
            unchecked.setdefault(config.learning.why, []).append(config.label)
    notes += [f"unchecked ({why}): {', '.join(labels)}." for why, labels in unchecked.items()]
    return notes + [f"{row['method_spec']} seed {row['seed']} {row['status']}: {row.get('error') or 'no error recorded'}"
                    for row in unfinished]


def config_views(rows: list[dict]) -> list[tuple[str, list[Col], list[list[str]], list[str]]]:
    """(title, columns, lines, notes) per model × task × data size, sorted by those; the legend closes the last."""
    blocks: dict[tuple, list[Config]] = {}
    for config in configs(rows):
        blocks.setdefault((config.model, config.task, config.n_train), []).append(config)
    unfinished = [row for row in rows if row.get("status") != "finished"]
    keys = set(blocks) | {(row["model"], row["task"], row["n_train"]) for row in unfinished}
    views = []
    for model, task, n_train in sorted(keys, key=lambda key: (str(key[0]), str(key[1]), key[2] or 0)):
        block = blocks.get((model, task, n_train), [])
        block.sort(key=lambda c: -c.score().mean if c.score() else float("inf"))  # stable: baselines, full, stored
        stopped = [row for row in unfinished if (row["model"], row["task"], row["n_train"]) == (model, task, n_train)]
        scale = next((c.scale for c in block), None) or stopped[0]["scale"]
        size = scale_name(scale) + ("" if str(scale) == str(n_train) else f" ({fmt_count(n_train)} training examples)")
        title = f"{model} · {task} · {size}" + (" (random weights: not evidence about methods)"
                                                 if random_weights(model) else "")
        metrics = {c.metric for c in block} - {None}
        cols = [Col(next(iter(metrics)), "number") if col.header == "score" and len(metrics) == 1 else col
                for col in COLUMNS]
        views.append((title, cols, [_line(c) for c in block], _notes(block, stopped)))
    if views:
        title, cols, lines, notes = views[-1]
        views[-1] = (title, cols, lines, notes + [LEGEND])
    return views
