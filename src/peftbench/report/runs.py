"""One line per stored run: the report's `runs` table, and the terminal view of `peftbench run` and
`peftbench results`, which keeps what a person decides from within the terminal's width."""

from peftbench.configurations import RANDOM_WEIGHTS, fmt_lr, random_weights
from peftbench.report.configs import Cell, Table, fmt, fmt_count
from peftbench.terminal import Col, clock

# Column -> its terminal column. Optional ones are left out, last first, when the table does not fit.
TERMINAL = {
    "task": Col("task", "name"), "model": Col("model", "name"), "method": Col("method", "name"),
    "n": Col("n", "number"), "seed": Col("seed", "number"), "metric": Col("metric", "name"),
    "score": Col("score", "number"), "run": Col("run", "name", optional=True),
    "time": Col("time", "number", optional=True),
    "trainable": Col("trainable", "number", optional=True), "best epoch": Col("best epoch", "number", optional=True),
    "stopped by": Col("stopped by", "name", optional=True), "peak MB": Col("peak MB", "number", optional=True),
    "lr": Col("lr", "number", optional=True), "peak lr": Col("peak lr", "number", optional=True),
    "train tok/s": Col("train tok/s", "number", optional=True),
    "infer tok/s": Col("infer tok/s", "number", optional=True), "train MFU": Col("train MFU", "number", optional=True),
}
# The run id right after the score: the optional column kept longest, since show and export take it.
ORDER = ["task", "model", "method", "n", "seed", "metric", "score", "run", "time", "trainable", "best epoch",
         "stopped by", "peak MB", "lr", "peak lr", "train tok/s", "infer tok/s", "train MFU", "error"]
SHORT_ID = 8  # characters of the run id shown; `peftbench show` and `export` take any unique prefix
CONSTANT_TO_CAPTION = ("n", "seed")


def _peak_lr(row: dict) -> float | None:
    lr, peak = row.get("lr"), row.get("peak_factor")
    return lr * peak if lr is not None and peak is not None else None


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.2g}%"


def runs_table(rows: list[dict]) -> Table:
    """One line per stored run, unfinished ones with their status and error."""
    lines = []
    for row in sorted(rows, key=lambda r: (r["task"], r["model"], r["n_train"], r["kind"] != "baseline",
                                           r["method_spec"], r["seed"])):
        finished = row["status"] == "finished"
        total, trainable, peak = row.get("total_params"), row.get("trainable_params"), row.get("peak_memory_bytes")
        share = trainable / total if finished and total and trainable is not None else None
        lr, peak_lr = row.get("lr"), _peak_lr(row)
        values = {
            "task": (row["task"], row["task"]), "model": (row["model"], row["model"]),
            "method": (row["method_spec"], row["method_spec"]), "n": (fmt_count(row["n_train"]), row["n_train"]),
            "seed": (str(row["seed"]), row["seed"]), "metric": (row.get("primary_metric") or "", row.get("primary_metric")),
            "score": (fmt(row.get("score")), row.get("score")) if finished else (row["status"], row["status"]),
            "run": (row["run_id"][:SHORT_ID], row["run_id"]),
            "time": (clock(row.get("wall_s")), row.get("wall_s")) if finished else ("", None),
            "trainable": ("–" if share is None else f"{share:.2%}", share),
            "best epoch": (fmt_count(row.get("best_epoch")), row.get("best_epoch")) if finished else ("", None),
            "stopped by": (row.get("stopped_by") or "–", row.get("stopped_by")) if finished else ("", None),
            "peak MB": (fmt(peak / 2**20 if peak else None, 0), peak / 2**20 if peak else None),
            "lr": ("–" if lr is None else fmt_lr(lr), lr), "peak lr": ("–" if peak_lr is None else fmt_lr(peak_lr), peak_lr),
            "train tok/s": (fmt(row.get("train_tokens_per_s"), 0), row.get("train_tokens_per_s")),
            "infer tok/s": (fmt(row.get("infer_tokens_per_s"), 0), row.get("infer_tokens_per_s")),
            "train MFU": (_percent(row.get("train_mfu")), row.get("train_mfu")),
            "error": ((row.get("error") or "")[:120], row.get("error") or ""),
        }
        lines.append([Cell(*values[column]) for column in ORDER])
    notes = ["Baselines: `majority` predicts the most frequent training label; `zero_shot` evaluates the"
             " untrained model. Peak MB is CUDA max_memory_allocated on GPU and the process's peak resident"
             " set on CPU. Time is the run's wall time (load, training, evaluation), minutes:seconds. lr is"
             " where warm-up starts; peak lr is where it takes it (lr × peak_factor). run is the run id's first"
             f" {SHORT_ID} characters (the CSV has it whole), which `peftbench show` and `peftbench export` take."
             " Train MFU is training FLOPs/s as a share of the device's peak (flops.py)."
             " Unfinished runs show their status and error."]
    randoms = sorted({row["model"] for row in rows if random_weights(row["model"])})
    if randoms:
        notes.append(f"{', '.join(randoms)}: {RANDOM_WEIGHTS}")
    return Table("runs", "All runs", ORDER, lines, notes)


def runs_views(rows: list[dict]) -> list[tuple[str, list[Col], list[list[str]], list[str]]]:
    """The terminal view of `run` and `results`: one table per model and task (their names in its title,
    the metric as the score's header), columns holding one value for every run of it moved into the title,
    and the error column only when a run has one."""
    table = runs_table(rows)
    column = {name: i for i, name in enumerate(table.columns)}
    groups: dict[tuple[str, str], list[list[Cell]]] = {}
    for line in table.rows:
        groups.setdefault((line[column["model"]].text, line[column["task"]].text), []).append(line)
    views = []
    for (model, task), lines in groups.items():
        title, keep = [f"{model} · {task}" + (" (random weights: not evidence about methods)"
                                              if random_weights(model) else "")], []
        for i, name in enumerate(table.columns):
            values = {line[i].text for line in lines} - ({""} if name == "metric" else set())
            if name in ("model", "task", "metric") and len(values) <= 1 or name == "error":
                continue
            if name in CONSTANT_TO_CAPTION and len(values) == 1:
                title.append(f"{name} {next(iter(values))}")
            else:
                keep.append(i)
        metric = {line[column["metric"]].text for line in lines} - {""}
        cols = [Col(next(iter(metric)), "number") if table.columns[i] == "score" and len(metric) == 1
                else TERMINAL[table.columns[i]] for i in keep]
        # An unfinished run's error goes under the table, whole, rather than into a narrow column.
        errors = [f"{line[column['method']].text} seed {line[column['seed']].text} {line[column['score']].text}:"
                  f" {line[column['error']].value}" for line in lines if line[column["error"]].value]
        views.append((" · ".join(title), cols, [[line[i].text for i in keep] for line in lines], errors))
    return views
