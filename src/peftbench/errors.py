"""The one exception type for user mistakes (the CLI prints its message on one line and exits 2), the exit
codes a script can act on, the one parser for numbers that come from outside a typed config (environment
variables and price tables), the one reader of files a user names (suites, price tables, data files), and the
one line that tells a file-system failure of any command (peftbench.cli.main)."""

import errno
import math
import os
import stat
from pathlib import Path

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


def read_file(path: Path, what: str, limit: int | None = None) -> bytes:
    """The bytes of a file a user names, or a UserError naming `what`, the file and the fix: it must be a regular
    file (a FIFO blocks its reader, /dev/zero never ends) of at most `limit` bytes, and readable."""
    try:
        mode = os.stat(path).st_mode  # before opening: opening a FIFO already blocks until a writer comes
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a pipe, a device or a socket)"
            raise UserError(f"{what} '{path}' is {kind}; pass the path of a file")
        with open(path, "rb") as file:
            data = file.read(-1 if limit is None else limit + 1)
    except OSError as error:
        error.filename = error.filename or str(path)  # a failed read() names no file
        raise UserError(os_error_line(error, f"read the {what}")) from None
    if limit is not None and len(data) > limit:
        raise UserError(f"{what} '{path}' is larger than {limit:,} bytes, which no {what} is; pass the right file")
    return data


# What to do about each file-system failure, by errno; the line also names the file and what was being done.
FIXES = {errno.ENOSPC: "free disk space and run the same command again",
         errno.EDQUOT: "free space within your disk quota and run the same command again",
         errno.EROFS: "pass a path on a writable file system",
         errno.EACCES: "pass a path you may use, or change its permissions",
         errno.EPERM: "pass a path you may use",
         errno.ENOTDIR: "a part of the path is a file, not a folder; pass another path",
         errno.EISDIR: "pass the path of a file",
         errno.ENOENT: "check the path",
         errno.ENAMETOOLONG: "pass a shorter path",
         errno.EEXIST: "pass a new path or remove it"}


def os_error_line(error: OSError, doing: str = "") -> str:
    """One line for a file-system failure: what was being done (when known), on which file, why, and the fix."""
    where = f"'{error.filename}': " if error.filename is not None else "the output: " if not doing else ""
    reason = error.strerror or type(error).__name__
    fix = FIXES.get(error.errno, "check the path and its folder")
    return f"{'cannot ' + doing + ': ' if doing else ''}{where}{reason}; {fix}"
