"""The one exception type for user mistakes (the CLI prints its message on one line and exits 2), the exit
codes a script can act on, and the one parser for numbers that come from outside a typed config: environment
variables and price tables."""

import math

# Exit codes of every command (docs/reliability.md): a script tells what happened without reading the output.
# A signal that stopped the command exits 128 + its number (129 SIGHUP, 130 SIGINT, 143 SIGTERM).
EXIT_OK = 0  # done; for `run` and `tune`, every run finished (or was already stored)
EXIT_RUNS_FAILED = 1  # `run`/`tune`: the grid went on to the end, but at least one run failed (stored as failed)
EXIT_USER_MISTAKE = 2  # one line naming the fix; nothing was trained or stored


class UserError(Exception):
    """A mistake in a suite, a flag, a data file or a model/method choice; the message names the fix."""


def parse_number(value: object, name: str, minimum: float | None = None, above: float | None = None,
                 fix: str = "", maximum: float | None = None) -> float:
    """`value` as a finite float, at least `minimum`, greater than `above` and at most `maximum`, or a
    UserError naming `name` and the fix. Text, NaN, infinities and out-of-range values are refused: an infinite or NaN lease never
    lapses, and a zero or negative price makes budgets and costs meaningless."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or (minimum is not None and number < minimum) or (above is not None
                                                                                   and number <= above) \
            or (maximum is not None and number > maximum):
        bound = f" of at least {minimum:g}" if minimum is not None else f" above {above:g}" if above is not None else ""
        bound += f" and at most {maximum:g}" if maximum is not None else ""
        raise UserError(f"{name}={value!r} is not a finite number{bound}" + (f"; {fix}" if fix else ""))
    return number
