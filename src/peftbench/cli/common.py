"""What every `peftbench` command shares: the Typer app, the common flags and choices, and the output helpers
(tables within the terminal's width, JSON on stdout)."""

import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from peftbench.errors import UserError

HELP = """The `peftbench` command line. Every command takes --json and then prints JSON only on stdout;
progress goes to stderr. User mistakes print one line and exit with code 2."""
app = typer.Typer(add_completion=False, no_args_is_help=False, help=HELP)
DEFAULT_STORE = Path("peftbench-results/results.db")
JsonFlag = Annotated[bool, typer.Option("--json", help="print machine-readable JSON only")]
StoreOption = Annotated[Path, typer.Option("--store", help="SQLite results store")]


class ExecutorKind(str, Enum):
    local = "local"
    ray = "ray"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


WideFlag = Annotated[bool, typer.Option("--wide", help="every column, however wide (default: what fits)")]


def stdout_console() -> Console:
    """Console for tables: COLUMNS when set (piped too), else the terminal's width, else wide (a file)."""
    from peftbench.terminal import console

    return console()


def show_view(title: str | None, view: tuple, wide: bool = False) -> None:
    from peftbench.terminal import print_table

    cols, rows, notes = view
    print_table(title, cols, rows, wide=wide, notes=notes, out=stdout_console())


def show_tables(title: str, views: list[tuple], wide: bool) -> None:
    """Tables (title, columns, lines, notes: report.runs.runs_views, report.config_view.config_views) under a
    title line; the columns left out at this width are named once, after the last."""
    from peftbench.terminal import print_table

    out = stdout_console()
    out.print(title, markup=False, highlight=False, style="bold")
    hidden = [print_table(heading, cols, lines, wide=wide, notes=notes, out=out, say_hidden=False)
              for heading, cols, lines, notes in views]
    for line in dict.fromkeys(line for line in hidden if line):
        out.print(line, markup=False, highlight=False)
    if not views:
        out.print("no runs", markup=False, highlight=False)


def finite(value):
    """JSON has no Infinity or NaN: a diverged run's non-finite numbers are printed as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def print_json(value) -> None:
    sys.stdout.write(json.dumps(finite(value), indent=2, default=str, allow_nan=False) + "\n")


def writable_folder(folder: Path, flag: str) -> None:
    """Refuse an output folder that cannot be one before anything trains (not after the whole grid)."""
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"{flag} '{folder}' cannot be a folder: '{blocker}' is a file, not a folder;"
                        " pass a folder path")


@contextmanager
def written_whole(out: Path, flag: str, empty: bool = False) -> Iterator[Path]:
    """A new folder beside `out` to write into, moved into place when the block succeeds: renamed to `out` when
    `out` is absent or empty, else its files moved over the ones of the same name (each file replaced at once).
    When the block fails (a full or read-only disk, an interrupt, a mistake) the new folder is removed with any
    parent folder made for it, and `out` is as it was: no half-written report or export is left behind.
    `empty`: `out` must be absent or empty (an export is never mixed with other files)."""
    writable_folder(out, flag)
    if empty and out.is_dir() and any(out.iterdir()):
        raise UserError(f"{flag} '{out}' exists and is not an empty folder; choose a new or empty folder")
    made = next((folder for folder in reversed(out.parents) if not folder.exists()), None)
    staging = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        yield staging
        if out.is_dir() and any(out.iterdir()):
            _move_into(staging, out)
        else:
            os.replace(staging, out)  # a rename: replaces an empty folder at once
    except BaseException as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        number = error.errno if isinstance(error, OSError) else _rust_os_error(error)
        if number is not None:  # named by the folder the user gave, not the staging folder inside it
            raise OSError(number, os.strerror(number), str(out)) from None
        raise


def _rust_os_error(error: BaseException) -> int | None:
    """The errno of a file-system failure in a Rust-backed writer (tokenizers, safetensors), which raise a plain
    Exception reading '... (os error 28)'; None for any other exception."""
    found = re.search(r"\(os error (\d+)\)", str(error)) if isinstance(error, Exception) else None
    return int(found.group(1)) if found else None


def _move_into(source: Path, target: Path) -> None:
    target.mkdir(exist_ok=True)
    for entry in source.iterdir():
        if entry.is_dir() and (target / entry.name).is_dir():
            _move_into(entry, target / entry.name)
        else:
            os.replace(entry, target / entry.name)
    source.rmdir()


def summary_path(folder: Path, name: str, store: Path) -> Path:
    """`NAME.md` beside the default store; `NAME@STORE.md` for another store, so that two stores in one
    folder never overwrite each other's summaries (a suite name cannot contain '@')."""
    return folder / (f"{name}.md" if store.name == DEFAULT_STORE.name else f"{name}@{store.stem}.md")




class DType(str, Enum):
    bf16 = "bf16"
    fp32 = "fp32"
