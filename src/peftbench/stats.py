"""Statistics over seeds and between methods: mean, sample std and a Student-t 95% interval per
configuration, and a paired bootstrap over the shared test rows for two configurations."""

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 2000
# The values a metric can take (peftbench.evaluate): an interval is clipped to them, since a 95% interval
# of an accuracy past 1.0 describes no possible result. Metrics not listed are unbounded.
METRIC_RANGES = {"accuracy": (0.0, 1.0), "balanced_accuracy": (0.0, 1.0), "macro_f1": (0.0, 1.0),
                 "mcc": (-1.0, 1.0), "rouge1": (0.0, 1.0), "rouge2": (0.0, 1.0), "rougeL": (0.0, 1.0),
                 "other_rate": (0.0, 1.0)}


@dataclass(frozen=True)
class Summary:
    """A value over seeds; std and the interval need at least two of them (None otherwise)."""

    mean: float
    n: int
    std: float | None = None
    low: float | None = None
    high: float | None = None


def summarise(values: list[float], bounds: tuple[float, float] | None = None) -> Summary | None:
    """Mean, sample std and Student-t 95% interval; `bounds` (a metric's range) clip the interval."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    mean = float(np.mean(values))
    if len(values) < 2:
        return Summary(mean, 1)
    from scipy.stats import t

    std = float(np.std(values, ddof=1))
    half = float(t.ppf((1 + CONFIDENCE) / 2, len(values) - 1)) * std / math.sqrt(len(values))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Summary(mean, len(values), std, low, high)


@dataclass(frozen=True)
class Paired:
    """Bootstrap of mean(a) - mean(b) over test rows resampled together for both."""

    difference: float
    low: float
    high: float
    p_value: float
    n_rows: int

    @property
    def significant(self) -> bool:
        return not self.low <= 0 <= self.high


def paired_bootstrap(a: list[float], b: list[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> Paired:
    """`a` and `b` score the same test rows in the same order (per row: 0/1 correct, or ROUGE-L, averaged
    over seeds). The p-value is two-sided: twice the smaller share of resampled differences on either side of 0."""
    first, second = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rows = np.random.default_rng(seed).integers(0, len(first), size=(samples, len(first)))
    differences = first[rows].mean(axis=1) - second[rows].mean(axis=1)
    low, high = np.percentile(differences, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
    p_value = min(1.0, 2 * min((differences <= 0).mean(), (differences >= 0).mean()))
    return Paired(float(first.mean() - second.mean()), float(low), float(high), float(p_value), len(first))
