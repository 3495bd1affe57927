"""What every table is made of: cells that carry a raw value beside the text shown, and the formatting of
numbers, counts and intervals over seeds (configurations come from peftbench.configurations)."""

from dataclasses import dataclass, field

from peftbench.configurations import random_weights
from peftbench.stats import Summary


def model_title(model: str) -> str:
    return f"{model} (random weights)" if random_weights(model) else model


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

    def text_columns(self) -> list[bool]:
        """Columns that hold words (left-aligned), not numbers."""
        return [i == 0 or any(isinstance(row[i].value, str) for row in self.rows)
                and not any(isinstance(row[i].value, (int, float)) for row in self.rows)
                for i in range(len(self.columns))]


def scale_name(scale) -> str:
    return str(scale) if isinstance(scale, str) else f"n={scale}"


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.2g}"  # two significant digits rather than a row of zeros
    return f"{value:,.{digits}f}"


def fmt_count(value: float | None) -> str:
    """A count: an integer as an integer (300, not 300.0); a mean of counts with one decimal if it needs it."""
    if value is None:
        return "–"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def stat_cell(summary: Summary | None, digits: int = 3, scale: float = 1.0, count: bool = False) -> Cell:
    """mean ± std over seeds (no ± with one seed, or when every seed gave the same count)."""
    if summary is None:
        return Cell("–")
    mean, std = summary.mean * scale, None if summary.std is None else summary.std * scale
    show = fmt_count if count else lambda value: fmt(value, digits)
    text = show(mean) + ("" if std is None or (count and std == 0) else f" ± {show(std)}")
    return Cell(text, mean, std)


def range_cell(values: list[float], digits: int = 3, scale: float = 1.0) -> Cell:
    """A quantity that is exact per run but differs between tasks (a parameter count with a task's head):
    one value, or its range; never a ± as if it were noise."""
    values = [v * scale for v in values if v is not None]
    if not values:
        return Cell("–")
    low, high = min(values), max(values)
    text = fmt(low, digits) if fmt(low, digits) == fmt(high, digits) else f"{fmt(low, digits)}–{fmt(high, digits)}"
    return Cell(text, sum(values) / len(values))


def mark_best(rows: list[list[Cell]], column: int, higher: bool = True, eligible: list[bool] | None = None,
              separated: bool = False) -> None:
    """Bold the best value of a column where that means something: among `eligible` rows (trained methods,
    not baselines or a reference), not when every candidate ties, and with `separated` only when the best
    is more than one seed std away from the runner-up (a measurement, not a tie in noise)."""
    eligible = eligible or [True] * len(rows)
    candidates = [row[column] for row, ok in zip(rows, eligible) if ok and isinstance(row[column].value, (int, float))]
    values = [cell.value for cell in candidates]
    if len(set(values)) < 2:
        return
    ordered = sorted(candidates, key=lambda cell: cell.value, reverse=higher)
    best = ordered[0].value
    if separated:
        runner_up = next(cell for cell in ordered if cell.value != best)
        spread = max(ordered[0].std or 0.0, runner_up.std or 0.0)
        if not spread or abs(best - runner_up.value) <= spread:
            return
    for cell in candidates:
        if cell.value == best:
            cell.best = True


def slug(text) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in str(text).lower()).strip("-")
