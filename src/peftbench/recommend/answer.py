"""What `recommend` answers: a ranking of method specs with their reasons, under hard limits, for a task type and
a data scale (Pu et al.'s low / medium / high)."""

from dataclasses import asdict, dataclass, field

from peftbench.errors import UserError

PRIORITIES = ("performance", "memory", "time", "inference")
# Pu et al.'s data scales: low <= 100, medium <= 1,000, high <= 10,000 training examples (section 2).
SCALES = ((100, "low"), (1000, "medium"))


@dataclass
class Limits:
    max_memory_gb: float | None = None
    max_minutes: float | None = None
    max_usd: float | None = None


@dataclass(frozen=True)
class Scope:
    """Which stored runs a recommendation reads (`recommend --task/--model/--scale/--suite`); None: any.
    `scale` is a suite's scale as stored (low, 100) or a number of training examples."""

    task: str | None = None
    model: str | None = None
    scale: str | None = None
    suite: str | None = None

    def flags(self) -> dict[str, str]:
        return {f"--{name}": value for name, value in asdict(self).items() if value is not None}

    def of(self) -> str:
        """' of --task X --model Y' to end a phrase with; '' when no flag chooses."""
        chosen = " ".join(f"{flag} {value}" for flag, value in self.flags().items())
        return f" of {chosen}" if chosen else ""

    def choose(self, rows: list[dict]) -> list[dict]:
        """The rows every flag keeps; a flag that keeps none is a UserError naming what the store has."""
        for name, value in asdict(self).items():
            if value is not None and not any(_keeps(name, value, row) for row in rows):
                have = sorted({str(row.get(name)) for row in rows})
                raise UserError(f"the store has no finished runs of --{name} {value}"
                                + (f"; it has {', '.join(have)}" if have else "") + " (see `peftbench results`)")
        chosen = [row for row in rows if all(value is None or _keeps(name, value, row)
                                             for name, value in asdict(self).items())]
        if rows and not chosen:
            raise UserError(f"the store has no finished run{self.of()} all at once (see `peftbench results`)")
        return chosen


def _keeps(name: str, value: str, row: dict) -> bool:
    if name == "scale":
        return value in (str(row.get("scale")), str(row.get("n_train")))
    return str(row.get(name)) == value


@dataclass
class Choice:
    method: str
    reasons: list[str]
    evidence: list[str] = field(default_factory=list)  # run ids
    sources: list[str] = field(default_factory=list)  # paper citations


@dataclass
class Recommendation:
    source: str  # measurements | priors
    task_type: str
    train_samples: int
    priority: str
    ranking: list[Choice]
    excluded: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compared_on: list[str] = field(default_factory=list)  # measurements: the blocks every ranked method ran on
    scope: dict[str, str] = field(default_factory=dict)  # the flags that chose the runs (Scope.flags)

    def as_dict(self) -> dict:
        return asdict(self)


def data_scale(n: int) -> str:
    return next((name for bound, name in SCALES if n <= bound), "high")


def task_type(row: dict) -> str:
    return "generation" if str(row.get("primary_metric", "")).startswith("rouge") else "classification"
