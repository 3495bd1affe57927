"""The comparison table printed after a run and written as Markdown next to the store."""

from pathlib import Path

COLUMNS = ("task", "model", "method", "n", "seed", "metric", "score", "trainable", "best epoch", "stopped by",
           "train tok/s", "infer tok/s", "peak MB", "wall s")


def _number(value, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def table_rows(rows: list[dict]) -> list[tuple[str, ...]]:
    """One line per run, sorted so a task's baselines and methods sit together; a run that did not finish
    shows its status (failed, interrupted, running) in place of a score."""
    lines = []
    for row in sorted(rows, key=lambda r: (r["task"], r["model"], r["n_train"], r["kind"] != "baseline",
                                           r["method_spec"], r["seed"])):
        if row["status"] != "finished":
            lines.append((row["task"], row["model"], row["method_spec"], str(row["n_train"]), str(row["seed"]),
                          "", row["status"], "", "", (row.get("error") or "")[:60], "", "", "", ""))
            continue
        total, trainable = row.get("total_params"), row.get("trainable_params")
        share = f"{trainable / total:.2%}" if total and trainable is not None else "–"
        peak = row.get("peak_memory_bytes")
        lines.append((
            row["task"], row["model"], row["method_spec"], str(row["n_train"]), str(row["seed"]),
            row["primary_metric"], _number(row.get("score"), 3), share, str(row.get("best_epoch", "–")),
            row.get("stopped_by", "–"), _number(row.get("train_tokens_per_s")), _number(row.get("infer_tokens_per_s")),
            _number(peak / 2**20 if peak else None), _number(row.get("wall_s"), 1),
        ))
    return lines


def markdown(rows: list[dict], title: str) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows)]
    lines += ["", "Baselines: `majority` predicts the most frequent training label; `zero_shot` evaluates the"
              " untrained model (for encoders, with an untrained head). Peak MB is CUDA max_memory_allocated on"
              " GPU and the process's peak resident set on CPU.", ""]
    return "\n".join(lines)


NUMERIC = {"n", "score", "train tok/s", "infer tok/s", "peak MB", "wall s"}


def rich_table(rows: list[dict], title: str):
    """The terminal table; columns that hold one value for every row move into the caption to save width."""
    from rich.table import Table
    from rich.text import Text

    lines = table_rows(rows)
    constant = [i for i, column in enumerate(COLUMNS)
                if column in {"model", "n", "seed", "metric"} and len({line[i] for line in lines if line[i]}) == 1]
    caption = ", ".join(f"{COLUMNS[i]} {next(line[i] for line in lines if line[i])}" for i in constant)
    table = Table(title=title, caption=caption or None)
    kept = [i for i in range(len(COLUMNS)) if i not in constant]
    for i in kept:
        table.add_column(COLUMNS[i], justify="right" if COLUMNS[i] in NUMERIC else "left")
    for line in lines:
        table.add_row(*(Text(line[i]) for i in kept))  # Text: method specs' brackets are not rich markup
    return table


def write_markdown(rows: list[dict], path: Path, title: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(rows, title), encoding="utf-8")
    return path
