"""Tables for a terminal of any width: a number or a name is never cut. A table that does not fit leaves
out its optional columns (named under it; `--wide` shows every column) and wraps its text columns.

Width: `COLUMNS` when set (also when piped), else the terminal's, else (piped) wide enough for files."""

import os
import sys
from dataclasses import dataclass
from typing import Literal

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

PIPED_WIDTH = 200  # piped without COLUMNS: a file or a pager, where long lines do no harm
TEXT_MIN_WIDTH = 12  # a wrapped text column keeps at least this many characters a line
WORD_MAX_WIDTH = 40  # a longer word (a URL, a path) may fold across lines
NAME_MIN_WIDTH = 12  # where even the required columns cannot fit, names fold to no narrower than this
GAP = 2  # characters between two columns (SIMPLE_HEAD, collapsed padding)


@dataclass(frozen=True)
class Col:
    """A column. `name`: something to type or read whole (a method spec, a task), never wrapped; `number`:
    right-aligned, never wrapped; `text`: wraps at spaces. `optional` columns are left out, last first,
    when the table does not fit."""

    header: str
    kind: Literal["name", "number", "text"] = "text"
    optional: bool = False


def clock(seconds: float | None) -> str:
    """Seconds as m:ss or h:mm:ss."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def console(stderr: bool = False) -> Console:
    if stderr:
        return Console(stderr=True)
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() or sys.stdout.isatty():
        return Console()  # rich reads COLUMNS itself, else the terminal's size
    return Console(width=PIPED_WIDTH)


def _need(col: Col, cells: list[str]) -> int:
    """The narrowest the column can be without cutting anything: a text column wraps between its words
    (a word longer than WORD_MAX_WIDTH alone folds)."""
    header = max(map(len, col.header.split()), default=0)  # a header wraps at its spaces
    longest = max(map(len, cells), default=0)
    if col.kind == "text":
        word = max((len(w) for cell in cells for w in cell.split()), default=0)
        return max(header, min(longest, max(TEXT_MIN_WIDTH, min(word, WORD_MAX_WIDTH))))
    return max(header, longest)


def layout(cols: list[Col], rows: list[list[str]], width: int, wide: bool = False) -> list[int]:
    """Indices of the columns to show at `width`: all of them with `wide`, else the required ones and as
    many optional ones, in order, as fit."""
    if wide:
        return list(range(len(cols)))
    needs = [_need(col, [row[i] for row in rows]) for i, col in enumerate(cols)]
    keep = list(range(len(cols)))
    total = lambda chosen: sum(needs[i] for i in chosen) + GAP * (len(chosen) - 1)  # noqa: E731
    for i in reversed(range(len(cols))):
        if total(keep) <= width:
            break
        if cols[i].optional:
            keep.remove(i)
    return keep


def natural_width(cols: list[Col], rows: list[list[str]]) -> int:
    """The width at which nothing wraps."""
    widths = [max([len(col.header), *(len(row[i]) for row in rows)]) for i, col in enumerate(cols)]
    return sum(widths) + GAP * (len(cols) - 1)


def _widths(cols: list[Col], rows: list[list[str]], keep: list[int], width: int) -> dict[int, int]:
    """Column widths: names and numbers as wide as their longest cell; the text columns share what is left,
    each at least its narrowest (its longest word), the rest in proportion to how much they would use."""
    need = {i: _need(cols[i], [row[i] for row in rows]) for i in keep}
    natural = {i: max([len(cols[i].header), *(len(row[i]) for row in rows)]) for i in keep}
    text = [i for i in keep if cols[i].kind == "text"]
    widths = {i: need[i] if cols[i].kind != "text" else natural[i] for i in keep}
    fixed = sum(need[i] for i in keep if i not in text) + GAP * (len(keep) - 1) + sum(
        min(need[i], TEXT_MIN_WIDTH) for i in text)
    if fixed > width:  # even the required columns do not fit: names fold onto more lines, numbers stay whole
        names = [i for i in keep if cols[i].kind == "name"]
        over = fixed - width
        for i in sorted(names, key=lambda i: -need[i]):
            cut = min(over, max(need[i] - NAME_MIN_WIDTH, 0))
            widths[i] = need[i] = need[i] - cut
            over -= cut
    free = width - GAP * (len(keep) - 1) - sum(need[i] for i in keep if i not in text)
    if text and sum(natural[i] for i in text) > free:
        spare = max(free - sum(need[i] for i in text), 0)
        extra = sum(natural[i] - need[i] for i in text) or 1
        for i in text:
            widths[i] = need[i] + spare * (natural[i] - need[i]) // extra
    return widths


def render(title: str | None, cols: list[Col], rows: list[list[str]], width: int, wide: bool = False,
           notes: list[str] = ()) -> tuple[Table, list[str]]:
    """The rich table and the lines to print under it (notes, and which columns were left out)."""
    keep = layout(cols, rows, width, wide)
    if wide:  # every column at its natural width: headers on one line, nothing wraps
        widths = {i: max([len(cols[i].header), *(len(row[i]) for row in rows)]) for i in keep}
    else:
        widths = _widths(cols, rows, keep, width)
    view = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
                 title_justify="left", title_style="bold")
    for i in keep:
        col = cols[i]
        # Cells of names and numbers never wrap; every header may wrap at its spaces.
        folds = col.kind == "text" or widths[i] < _need(col, [row[i] for row in rows])
        view.add_column(Text(col.header, no_wrap=False, overflow="fold"), width=widths[i], overflow="fold",
                        justify="right" if col.kind == "number" else "left", no_wrap=not folds)
    for row in rows:
        view.add_row(*(Text(row[i]) for i in keep))  # Text: method specs' brackets are not rich markup
    lines = list(notes)
    hidden = [cols[i].header for i in range(len(cols)) if i not in keep]
    if hidden:
        lines.append(f"not shown at {width} columns: {', '.join(hidden)} (--wide shows every column)")
    return view, lines


def print_table(title: str | None, cols: list[Col], rows: list[list[str]], wide: bool = False,
                notes: list[str] = (), out: Console | None = None, say_hidden: bool = True) -> str | None:
    """Print a table that fits the console (or, `wide`, every column at full width). Returns the line
    naming the columns left out (printed too unless `say_hidden` is False)."""
    out = out or console()
    width = max(out.width, natural_width(cols, rows)) if wide else out.width
    view, lines = render(title, cols, rows, width, wide, notes)
    hidden = lines.pop() if len(lines) > len(notes) else None
    if wide and width > out.width:
        out = Console(width=width, file=out.file, force_terminal=out.is_terminal)
    out.print(view)
    for line in lines + ([hidden] if hidden and say_hidden else []):
        out.print(line, markup=False, highlight=False)
    return hidden
