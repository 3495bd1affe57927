"""What a tuning study searches. By default the learning rate where warm-up starts, log-uniform over a factor
`LR_SPAN` either side of the run's default (the suite's `learning_rates` entry or the method's `default_lr`), as
Lialin et al. (11.1) sweep it per method; a method may add one axis of its own options through its hook
(`Method.tuning_axes`: LoRA's rank, prompt tuning's tokens); a suite's `tune.space` replaces any axis. An option
the suite's method spec sets is the user's choice and is not searched."""

from dataclasses import dataclass

from peftbench.errors import UserError

LR = "lr"
LR_SPAN = 10.0  # the default learning rate's range: from a tenth of it to ten times it


@dataclass(frozen=True)
class Axis:
    """One hyper-parameter: a log-uniform range (`low`, `high`) or a list of `choices` (an option's values)."""

    name: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()

    @property
    def is_range(self) -> bool:
        return not self.choices

    def contains(self, value) -> bool:
        return self.low <= value <= self.high if self.is_range else value in self.choices

    def describe(self) -> dict:
        """As a run's spec records it (and the study's id hashes it)."""
        return {"low": self.low, "high": self.high, "log": True} if self.is_range else {"choices": list(self.choices)}

    def text(self) -> str:
        if self.is_range:
            return f"{self.name} {self.low:.3g}–{self.high:.3g} (log)"
        return f"{self.name} {{{', '.join(map(str, self.choices))}}}"


def lr_axis(default_lr: float) -> Axis:
    return Axis(LR, default_lr / LR_SPAN, default_lr * LR_SPAN)


def override_axis(name: str, value, where: str) -> Axis:
    """An axis as a suite writes it under tune.space: {low: .., high: ..} for a log range, a list for choices."""
    if isinstance(value, dict):
        low, high = value.get("low"), value.get("high")
        if set(value) != {"low", "high"} or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    for v in (low, high)) or not 0 < low < high:
            raise UserError(f"{where}.{name}: write a log range as {{low: A, high: B}} with 0 < A < B, or a list of"
                            " values to choose from")
        return Axis(name, float(low), float(high))
    if isinstance(value, list) and value and len(set(map(str, value))) == len(value):
        return Axis(name, choices=tuple(value))
    raise UserError(f"{where}.{name}: write a log range as {{low: A, high: B}}, or a list of distinct values")


def search_space(default_lr: float, method_axes: tuple[Axis, ...], fixed: set[str],
                 overrides: dict[str, Axis]) -> dict[str, Axis]:
    """The study's axes in order: the learning rate, the method's own axes over options the spec leaves free,
    then each replaced by the suite's override of the same name (an override may also add an option)."""
    space = {LR: lr_axis(default_lr), **{axis.name: axis for axis in method_axes if axis.name not in fixed}}
    return {**space, **overrides}
