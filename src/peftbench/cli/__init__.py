"""The `peftbench` command line. Every command takes --json and then prints JSON only on stdout;
progress goes to stderr. User mistakes print one line and exit with code 2."""

import os
import signal
import sys
import warnings

import typer
from rich.console import Console

from peftbench.errors import EXIT_USER_MISTAKE, UserError, os_error_line

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Library deprecation chatter would drown the progress display; real problems surface as errors.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="Unsupported layer type")  # PEFT LN tuning on nn.LayerNorm works
warnings.filterwarnings("ignore", message=".*requires_grad=True to a scalar")

# Each command module registers its commands on the app when imported, in the order `--help` lists them.
from peftbench.cli import running  # noqa: E402, F401, I001
from peftbench.cli import stored  # noqa: E402, F401
from peftbench.cli import catalog  # noqa: E402, F401
from peftbench.cli import profiling  # noqa: E402, F401
from peftbench.cli import removal  # noqa: E402, F401
from peftbench.cli.common import app  # noqa: E402


def _error(message: str) -> None:
    Console(stderr=True, soft_wrap=True).print(message, markup=False, highlight=False)


def _flush_stdout() -> None:
    """Flush stdout; if it fails (a full device, a closed pipe), point it at /dev/null, so that the interpreter's
    own flush at exit fails no second time (Python's documented recipe for SIGPIPE)."""
    try:
        sys.stdout.flush()
    except OSError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main() -> None:
    """Exit codes (peftbench.errors): 0 success, 1 when `run`/`tune` stored a failed run, 2 a user mistake or a
    file-system failure (one line, no traceback), 128 + the signal after SIGHUP (129), Ctrl-C (130) or SIGTERM
    (143), in every phase of every command. Every file-system failure of any command (a full or read-only disk,
    a path under a file, stdout on a full device) ends here, as one line; the commands that write folders write
    them whole or not at all (cli.common.written_whole)."""
    from peftbench.interrupts import EXIT_CODES, Terminated, terminate

    stopping = (signal.SIGTERM, signal.SIGHUP)
    previous = {number: signal.signal(number, terminate) for number in stopping}
    try:
        code = app(standalone_mode=False)  # typer returns 130 for a KeyboardInterrupt it caught
        sys.stdout.flush()  # stdout on a full device fails here, not in the interpreter's exit
    except UserError as error:
        _error(f"error: {error}")
        code = EXIT_USER_MISTAKE
    except typer.Abort:
        code = EXIT_CODES[signal.SIGINT]
    except typer.TyperException as error:  # a bad flag or argument: typer's own usage errors
        _error(f"error: {error.format_message()} (see `peftbench --help`)")
        code = EXIT_USER_MISTAKE
    except KeyboardInterrupt:
        code = EXIT_CODES[signal.SIGINT]
    except OSError as error:
        _flush_stdout()
        _error(f"error: {os_error_line(error)}")
        code = EXIT_USER_MISTAKE
    except Terminated as stop:
        code = stop.exit_code
    finally:
        for number, handler in previous.items():
            if signal.getsignal(number) is not signal.SIG_IGN:  # a handled stop ignores late signals to the end
                signal.signal(number, handler)
    if code in EXIT_CODES.values():
        _error("interrupted: stopped at once; a run in progress is stored as interrupted, and running the same"
               " command again resumes")
    sys.exit(code if isinstance(code, int) else 0)
