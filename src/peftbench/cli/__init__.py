"""The `peftbench` command line. Every command takes --json and then prints JSON only on stdout;
progress goes to stderr. User mistakes print one line and exit with code 2."""

import os
import signal
import sys
import warnings

import typer
from rich.console import Console

from peftbench.errors import UserError

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


def main() -> None:
    """Exit codes: 0 success, 2 a user mistake (one line, no traceback), 130 after Ctrl-C and 143 after
    SIGTERM, in every phase of every command."""
    from peftbench.interrupts import EXIT_CODES, Terminated, terminate

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        code = app(standalone_mode=False)  # typer returns 130 for a KeyboardInterrupt it caught
    except UserError as error:
        _error(f"error: {error}")
        code = 2
    except typer.Abort:
        code = EXIT_CODES[signal.SIGINT]
    except typer.TyperException as error:  # a bad flag or argument: typer's own usage errors
        _error(f"error: {error.format_message()} (see `peftbench --help`)")
        code = 2
    except KeyboardInterrupt:
        code = EXIT_CODES[signal.SIGINT]
    except Terminated:
        code = EXIT_CODES[signal.SIGTERM]
    finally:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:  # a handled stop ignores late signals to the end
            signal.signal(signal.SIGTERM, previous)
    if code in (EXIT_CODES[signal.SIGINT], EXIT_CODES[signal.SIGTERM]):
        _error("interrupted: stopped at once; a run in progress is stored as interrupted, and running the same"
               " command again resumes")
    sys.exit(code if isinstance(code, int) else 0)

