"""Render tables as Markdown, CSV, LaTeX, a self-contained HTML page, or a rich terminal table."""

import base64
import csv
import html
import io

from peftbench.report.tables import Cell, Table


def markdown_table(table: Table) -> str:
    escape = lambda text: text.replace("|", "\\|")
    lines = [f"## {table.title}", "", "| " + " | ".join(map(escape, table.columns)) + " |",
             "|" + "---|" * len(table.columns)]
    for row in table.rows:
        lines.append("| " + " | ".join(f"**{escape(c.text)}**" if c.best else escape(c.text) for c in row) + " |")
    if not table.rows:
        lines.append("| " + " | ".join(["–"] * len(table.columns)) + " |")
    return "\n".join([*lines, "", *[f"{note}  " for note in table.notes], ""])


def markdown(title: str, intro: list[str], tables: list[Table], images: dict[str, str] | None = None) -> str:
    """The whole report; `images` maps a caption to a PNG path relative to the Markdown file."""
    parts = [f"# {title}", "", *[f"{line}  " for line in intro], ""]
    parts += [markdown_table(table) for table in tables]
    if images:
        parts += ["## Plots", ""] + [f"![{caption}]({path})\n" for caption, path in images.items()]
    return "\n".join(parts)


def csv_text(table: Table) -> str:
    """Raw numbers, with a `COLUMN std` column beside each column that has a std anywhere."""
    with_std = [i for i in range(len(table.columns)) if any(row[i].std is not None for row in table.rows)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = []
    for i, column in enumerate(table.columns):
        header += [column, f"{column} std"] if i in with_std else [column]
    writer.writerow(header)
    for row in table.rows:
        line = []
        for i, cell in enumerate(row):
            value = cell.text if cell.value is None and cell.text not in ("–", "") else cell.value
            line += [value, cell.std] if i in with_std else [value]
        writer.writerow(["" if value is None else value for value in line])
    return out.getvalue()


TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               "±": r"$\pm$", "–": "--", "−": "$-$"}


def tex_escape(text: str) -> str:
    return "".join(TEX_SPECIAL.get(ch, ch) for ch in text)


def tex_table(table: Table) -> str:
    """A booktabs table (needs \\usepackage{booktabs})."""
    lines = [r"\begin{table}[ht]", r"\centering", r"\small",
             r"\begin{tabular}{l" + "r" * (len(table.columns) - 1) + "}", r"\toprule",
             " & ".join(tex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    for row in table.rows:
        lines.append(" & ".join(rf"\textbf{{{tex_escape(c.text)}}}" if c.best else tex_escape(c.text)
                                for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{tex_escape(table.title)}. "
              + tex_escape(" ".join(table.notes)) + "}", rf"\label{{tab:{table.key}}}", r"\end{table}", ""]
    return "\n".join(lines)


STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 0.3em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: right; }
th { background: #e8eef6; } td:first-child, th:first-child { text-align: left; }
td.best { font-weight: bold; background: #fff4c2; } td.text { text-align: left; }
p.note { font-size: 0.85em; color: #555; margin: 0.2em 0; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #ddd; }
nav li { margin: 2px 0; }
"""


def _html_cell(cell: Cell) -> str:
    classes = " ".join(name for name, on in (("best", cell.best), ("text", isinstance(cell.value, str))) if on)
    return f'<td class="{classes}">{html.escape(cell.text)}</td>' if classes else f"<td>{html.escape(cell.text)}</td>"


def html_page(title: str, intro: list[str], tables: list[Table], figures: dict[str, bytes]) -> str:
    """One file: styles inline, PNGs as data URIs, a table of contents of anchors; no scripts."""
    sections = [(table.key, table.title) for table in tables]
    sections += [(f"plot-{i}", caption) for i, caption in enumerate(figures)]
    toc = "".join(f'<li><a href="#{key}">{html.escape(name)}</a></li>' for key, name in sections)
    body = [f"<h1>{html.escape(title)}</h1>", *[f"<p>{html.escape(line)}</p>" for line in intro],
            f'<nav><h2>Contents</h2><ol>{toc}</ol></nav>']
    for table in tables:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
        rows = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in table.rows)
        notes = "".join(f'<p class="note">{html.escape(note)}</p>' for note in table.notes)
        body.append(f'<section id="{table.key}"><h2>{html.escape(table.title)}</h2>'
                    f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{notes}</section>")
    for i, (caption, png) in enumerate(figures.items()):
        data = base64.b64encode(png).decode("ascii")
        body.append(f'<section id="plot-{i}"><h2>{html.escape(caption)}</h2><figure>'
                    f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"></figure></section>')
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def rich_table(table: Table, title: str):
    """The terminal view of a table; columns holding one value for every row move into the caption."""
    from rich.table import Table as RichTable
    from rich.text import Text

    constant = [i for i, column in enumerate(table.columns) if column in {"model", "n", "seed", "metric"}
                and len({row[i].text for row in table.rows if row[i].text}) == 1]
    caption = ", ".join(f"{table.columns[i]} {next(row[i].text for row in table.rows if row[i].text)}"
                        for i in constant)
    view = RichTable(title=title, caption=caption or None)
    kept = [i for i in range(len(table.columns)) if i not in constant]
    for i in kept:
        numeric = all(isinstance(row[i].value, (int, float)) or row[i].value is None for row in table.rows)
        view.add_column(table.columns[i], justify="right" if numeric and i else "left")
    for row in table.rows:
        view.add_row(*(Text(row[i].text) for i in kept))  # Text: method specs' brackets are not rich markup
    return view
