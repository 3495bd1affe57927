"""What `recommend` answers: a ranking of method specs with their reasons, under hard limits, for a task type and
a data scale (Pu et al.'s low / medium / high)."""

from dataclasses import asdict, dataclass, field

PRIORITIES = ("performance", "memory", "time", "inference")
# Pu et al.'s data scales: low <= 100, medium <= 1,000, high <= 10,000 training examples (section 2).
SCALES = ((100, "low"), (1000, "medium"))


@dataclass
class Limits:
    max_memory_gb: float | None = None
    max_minutes: float | None = None
    max_usd: float | None = None


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

    def as_dict(self) -> dict:
        return asdict(self)


def data_scale(n: int) -> str:
    return next((name for bound, name in SCALES if n <= bound), "high")


def task_type(row: dict) -> str:
    return "generation" if str(row.get("primary_metric", "")).startswith("rouge") else "classification"
