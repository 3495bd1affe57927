"""The one exception type for user mistakes (the CLI prints its message on one line and exits 2), and the
one parser for numbers that come from outside a typed config: environment variables and price tables."""

import math


class UserError(Exception):
    """A mistake in a suite, a flag, a data file or a model/method choice; the message names the fix."""


def parse_number(value: object, name: str, minimum: float | None = None, above: float | None = None,
                 fix: str = "") -> float:
    """`value` as a finite float, at least `minimum` and greater than `above`, or a UserError naming `name`
    and the fix. Text, NaN, infinities and out-of-range values are refused: an infinite or NaN lease never
    lapses, and a zero or negative price makes budgets and costs meaningless."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or (minimum is not None and number < minimum) or (above is not None
                                                                                   and number <= above):
        bound = f" of at least {minimum:g}" if minimum is not None else f" above {above:g}" if above is not None else ""
        raise UserError(f"{name}={value!r} is not a finite number{bound}" + (f"; {fix}" if fix else ""))
    return number
