"""What every table, plot and the summary is made of: stored runs grouped into configurations (a method
on a model, task and data size, over its seeds), and cells that carry a raw value beside the text shown."""

from collections.abc import Callable
from dataclasses import dataclass, field

from peftbench.identity import SEED_KEY, configuration_key
from peftbench.report.stats import METRIC_RANGES, Summary, summarise
from peftbench.sweep import final_rows

RANDOM_WEIGHTS = ("Random-weight model (config:): its scores exercise the pipeline and say nothing about the"
                  " methods, so no significance is claimed for it.")


def random_weights(model: str) -> bool:
    """`config:` models are architectures with random weights (peftbench.models)."""
    return str(model).startswith("config:")


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

    @property
    def metric(self) -> str | None:
        return self.first("primary_metric")

    @property
    def random_weights(self) -> bool:
        return random_weights(self.model)

    def summary(self, value: Callable[[dict], float | None], bounds: tuple[float, float] | None = None) -> Summary | None:
        return summarise([value(run) for run in self.runs], bounds)

    def score(self) -> Summary | None:
        """The primary metric over seeds, its interval clipped to the metric's range."""
        return self.summary(score, METRIC_RANGES.get(self.metric))

    def first(self, key: str):
        return next((run[key] for run in self.runs if run.get(key) is not None), None)

    def lr_text(self) -> str | None:
        """`3e-05 → peak 3e-04`: the starting LR and where warm-up takes it (train.lr_factor)."""
        lr, peak = self.first("lr"), self.first("peak_factor")
        if lr is None:
            return None
        return f"{fmt_lr(lr)} → peak {fmt_lr(lr * peak)}" if peak not in (None, 1) else f"{fmt_lr(lr)} (no warm-up peak)"


def scale_name(scale) -> str:
    return str(scale) if isinstance(scale, str) else f"n={scale}"


def score(run: dict) -> float | None:
    return run.get("score")


# Spec fields computed from the others (a sweep group's id hashes the group's spec), never worth a label.
DERIVED_FIELDS = ("sweep.group",)


def _flat(spec: dict, prefix: str = "") -> dict[str, object]:
    """A spec's fields with nested ones dotted (budget.usd, method_options.r), for naming what differs."""
    flat = {}
    for key, value in spec.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def configs(rows: list[dict]) -> list[Config]:
    """Finished runs grouped over seeds, in the order they were first stored (baselines first, then full).
    Runs are seeds of one configuration when their specs are equal but for the seed (identity.configuration_key):
    a difference in any other field, of a budget or a precision switch as much as of a hyper-parameter, keeps
    them apart. A method spec that appears in several configurations for the same model, task and data size
    gets what differs in its label, e.g. `lora (lr=0.001, peak 0.01)`."""
    groups: dict[tuple, Config] = {}
    for row in final_rows([row for row in rows if row.get("status") == "finished"]):
        key = (row["kind"], configuration_key(row["spec"]))
        if key not in groups:
            groups[key] = Config(row["model"], row["task"], row["scale"], row["n_train"], row["method_spec"],
                                 row["kind"], [])
        groups[key].runs.append(row)
    siblings: dict[tuple, list[Config]] = {}
    for config in groups.values():
        siblings.setdefault((config.model, config.task, config.n_train, config.method_spec, config.kind),
                            []).append(config)
    for family in siblings.values():
        specs = [_flat(config.runs[0]["spec"]) for config in family]
        names = sorted({name for spec in specs for name in spec} - {SEED_KEY, *DERIVED_FIELDS})
        differing = [name for name in names if len({str(spec.get(name)) for spec in specs}) > 1]
        for config, spec in zip(family, specs):
            parts = [f"{name}={spec.get(name)}" for name in differing]
            if "lr" in differing and spec.get("peak_factor") not in (None, 1):
                parts[differing.index("lr")] += f", peak {fmt_lr(spec['lr'] * spec['peak_factor'])}"
            config.label = f"{config.method_spec} ({', '.join(parts)})" if parts else config.method_spec
    ordered = list(groups.values())
    ordered.sort(key=lambda c: (c.kind != "baseline", c.method_spec != "full"))  # stable: storage order otherwise
    return ordered


def labels(items: list[Config]) -> list[str]:
    return list(dict.fromkeys(config.label for config in items))


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.2g}"  # two significant digits rather than a row of zeros
    return f"{value:,.{digits}f}"


def fmt_lr(value: float) -> str:
    """A learning rate as people write it: 3e-4, 1e-3, 0.5."""
    if value == 0 or 1e-2 <= abs(value) < 1e3:
        return f"{value:g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


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
