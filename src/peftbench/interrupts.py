"""Stopping on request. The first SIGINT (Ctrl-C), SIGTERM or SIGHUP (a closed terminal or SSH session) during
a grid asks the run in progress to stop at its next training step or evaluation batch, where it is stored as
`interrupted`; a second one stops at once. Signals are process-wide, so the request is too: one event that the
training loop, the evaluation loops and the executors all look at. Exit codes: 128 + the signal (129 after
SIGHUP, 130 after SIGINT, 143 after SIGTERM)."""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP = threading.Event()
EXIT_CODES = {signal.SIGHUP: 129, signal.SIGINT: 130, signal.SIGTERM: 143}


class RunInterrupted(Exception):
    """The run in progress stops at a step or batch boundary after a stop request."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP outside a grid, or a second one: leave at once (exit 128 + the signal). A
    BaseException, like KeyboardInterrupt, so that no `except Exception` turns it into a failed run."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signum)
        self.exit_code = EXIT_CODES[signum]


class _Requested:
    signal: int = signal.SIGINT


requested = _Requested()


def check_stop(where: str) -> None:
    """Raise RunInterrupted if a stop was requested; `where` says at what point, for the stored error."""
    if STOP.is_set():
        raise RunInterrupted(f"stopped by {signal.Signals(requested.signal).name} {where}")


def terminate(signum, frame) -> None:
    raise Terminated(signum)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """While a grid runs: the first SIGINT, SIGTERM or SIGHUP sets STOP; the signals then get back the handlers
    they had (KeyboardInterrupt for SIGINT, `terminate` for the others), so a second one stops at once."""
    STOP.clear()
    previous = {number: signal.getsignal(number) for number in EXIT_CODES}

    def request_stop(signum, frame) -> None:
        requested.signal = signum
        STOP.set()
        for number, handler in previous.items():
            signal.signal(number, handler)

    for number in EXIT_CODES:
        signal.signal(number, request_stop)
    try:
        yield STOP
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back while the store records how runs ended (a KeyboardInterrupt in the
    middle would leave a run `running`); a signal that arrived meanwhile takes effect right after."""
    held: list[int] = []
    previous = {number: signal.getsignal(number) for number in EXIT_CODES}
    for number in EXIT_CODES:
        signal.signal(number, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in held[:1]:
            handler = previous[number]
            if callable(handler):
                handler(number, None)
            elif handler == signal.SIG_DFL:
                raise KeyboardInterrupt if number == signal.SIGINT else Terminated(number)


def ignore_further_signals() -> None:
    """Once a stop has been handled and the command is leaving, a late second signal must not turn a clean
    exit into a traceback."""
    for number in EXIT_CODES:
        signal.signal(number, signal.SIG_IGN)


def exit_code() -> int:
    return EXIT_CODES[requested.signal]
