"""Render the report as Markdown, CSV, LaTeX or one self-contained HTML page: the summary (the answer)
first, then the tables, then the figures, then where it all came from."""

import base64
import csv
import html
import io

from peftbench.report.configs import Cell, Table
from peftbench.report.summary import COLUMNS as SUMMARY_COLUMNS
from peftbench.report.summary import Block, block_rows, general_notes

SUMMARY_INTRO = ("For each model, task and data size: the method `peftbench recommend` ranks first under each"
                 " priority (performance: score; memory: lowest peak memory; time: shortest run; inference: fastest"
                 " inference), with its evidence (mean over seeds; the score's 95% interval over seeds, clipped to"
                 " the metric's range) and the reasoning. Treat a lead marked as within noise as a tie.")


def _md_escape(text: str) -> str:
    """Text as Markdown shows it: a label such as `<other>` or `<b>` is HTML to a Markdown renderer, which would
    hide it or render it; `|` would split the table cell."""
    return html.escape(text, quote=False).replace("|", "\\|")


def _md_rows(columns: list[str], rows: list[list[str]], text: list[bool]) -> list[str]:
    align = "|" + "".join(":---|" if is_text else "---:|" for is_text in text)
    lines = ["| " + " | ".join(map(_md_escape, columns)) + " |", align]
    lines += ["| " + " | ".join(map(_md_escape, row)) + " |" for row in rows]
    if not rows:
        lines.append("| " + " | ".join(["–"] * len(columns)) + " |")
    return lines


def markdown_table(table: Table) -> str:
    rows = [[f"**{c.text}**" if c.best else c.text for c in row] for row in table.rows]
    lines = [f"## {_md_escape(table.title)}", "", *_md_rows(table.columns, rows, table.text_columns())]
    return "\n".join([*lines, "", *[f"{_md_escape(note)}  " for note in table.notes], ""])


def summary_markdown(blocks: list[Block], images: dict[str, str] | None = None) -> str:
    parts = ["## Summary: which method to use", "", SUMMARY_INTRO, ""]
    if not blocks:
        parts += ["No finished training runs yet.", ""]
    for block in blocks:
        parts += [f"### {_md_escape(block.title)}", ""]
        if images and f"scores-{block.key}" in images:
            parts += [f"![Score per method: {block.title}]({images[f'scores-{block.key}']})", ""]
        text = [True, True] + [False] * (len(SUMMARY_COLUMNS) - 3) + [True]
        parts += _md_rows(SUMMARY_COLUMNS, block_rows(block), text) + [""]
        parts += [f"{_md_escape(note)}  " for note in block.notes] + [""]
    parts += [f"{_md_escape(note)}  " for note in general_notes(blocks)] + [""]
    return "\n".join(parts)


def markdown(report, images: dict[str, str] | None = None, captions: dict[str, str] | None = None) -> str:
    """The whole report; `images` maps a figure key to a PNG path relative to the Markdown file."""
    parts = [f"# {report.title}", "", *[f"{line}  " for line in report.intro], ""]
    parts.append(summary_markdown(report.summary, images))
    parts += [markdown_table(table) for table in report.tables]
    if images:
        parts += ["## Plots", ""] + [f"![{(captions or {}).get(key, key)}]({path})\n" for key, path in images.items()
                                     if not key.startswith("scores-")]
    parts += ["## Provenance", "", *[f"{line}  " for line in report.provenance], ""]
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
               "±": r"$\pm$", "–": "--", "−": "$-$", "→": r"$\to$", "†": r"$^\dagger$"}


def tex_escape(text: str) -> str:
    return "".join(TEX_SPECIAL.get(ch, ch) for ch in text)


def tex_table(table: Table) -> str:
    """A booktabs table (needs \\usepackage{booktabs})."""
    align = "".join("l" if is_text else "r" for is_text in table.text_columns())
    lines = [r"\begin{table}[ht]", r"\centering", r"\small", r"\begin{tabular}{" + align + "}", r"\toprule",
             " & ".join(tex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    for row in table.rows:
        lines.append(" & ".join(rf"\textbf{{{tex_escape(c.text)}}}" if c.best else tex_escape(c.text)
                                for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{tex_escape(table.title)}. "
              + tex_escape(" ".join(table.notes)) + "}", rf"\label{{tab:{table.key}}}", r"\end{table}", ""]
    return "\n".join(lines)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } p.lede { color: #444; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0 0.3em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: right; vertical-align: top; }
td { white-space: nowrap; } td.words { white-space: normal; min-width: 12em; } div.scroll { overflow-x: auto; }
th { background: #e8eef6; } .text { text-align: left; }
td.best { font-weight: bold; background: #fff4c2; }
p.note { font-size: 0.85em; color: #555; margin: 0.2em 0; }
#summary { border: 2px solid #2b6cb0; border-radius: 6px; padding: 0.2em 1.2em 1em; background: #f7fafd; }
#summary h3 { margin-bottom: 0.3em; } #summary td.why { min-width: 18em; max-width: 34em; font-size: 0.95em; }
#summary td.pick { font-weight: bold; }
figure { margin: 0.8em 0; } img { max-width: 100%; border: 1px solid #ddd; background: #fff; }
figcaption { font-size: 0.85em; color: #555; }
nav ol { columns: 2; font-size: 0.9em; } nav li { margin: 2px 0; }
footer { margin-top: 2em; font-size: 0.85em; color: #555; border-top: 1px solid #ccc; }
"""
CAPTIONS = {
    "scores": "Each method's mean score with ± one standard deviation over seeds (small dots: the seeds), best at"
              " the top; the dashed and dotted lines are the majority and zero-shot baselines.",
    "pareto-params": "Mean score against trainable parameters (log scale), error bars ± one std over seeds; the"
                     " dark line joins the methods no other method beats on both.",
    "pareto-memory": "Mean score against peak memory from zero; a spread smaller than the error bars is noise.",
    "pareto-forgetting": "Mean score against forgetting (the tuned model's loss per token on a held-out general text"
                         " minus the base model's; the grey line is no change): left is less forgotten, and the"
                         " dark line joins the methods no other method beats on both.",
    "val-loss": "Validation loss after each epoch against wall time since the run started; one line per seed.",
    "train-loss": "Mean training loss of each epoch; one line per seed.",
    "predictions": "How often each label (and '<other>', an answer naming none) was predicted on the test set.",
}


def _html_cell(cell: Cell, text: bool) -> str:
    # A name (no spaces) stays on one line; words wrap, but not into a sliver.
    words = text and " " in cell.text
    classes = " ".join(name for name, on in (("best", cell.best), ("text", text), ("words", words)) if on)
    return f'<td class="{classes}">{html.escape(cell.text)}</td>' if classes else f"<td>{html.escape(cell.text)}</td>"


def _html_table(columns: list[str], rows: list[str], text: list[bool]) -> str:
    head = "".join(f'<th class="text">{html.escape(c)}</th>' if is_text else f"<th>{html.escape(c)}</th>"
                   for c, is_text in zip(columns, text))
    # In a scrolling box: a wide table scrolls on a narrow screen instead of running out of the page.
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _img(figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    caption = CAPTIONS.get(figure.kind, "")
    return (f'<figure><img alt="{html.escape(figure.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _summary_html(blocks: list[Block], charts: dict) -> str:
    parts = ['<section id="summary"><h2>Summary: which method to use</h2>', f"<p>{html.escape(SUMMARY_INTRO)}</p>"]
    if not blocks:
        parts.append("<p>No finished training runs yet.</p>")
    for block in blocks:
        rows = []
        for line in block_rows(block):
            cells = [f'<td class="text">{html.escape(line[0])}</td>', f'<td class="text pick">{html.escape(line[1])}</td>']
            cells += [f"<td>{html.escape(value)}</td>" for value in line[2:-1]]
            cells.append(f'<td class="text words why">{html.escape(line[-1])}</td>')
            rows.append("<tr>" + "".join(cells) + "</tr>")
        text = [True, True] + [False] * (len(SUMMARY_COLUMNS) - 3) + [True]
        parts.append(f'<div class="block" id="summary-{block.key}"><h3>{html.escape(block.title)}</h3>'
                     + _html_table(SUMMARY_COLUMNS, rows, text)
                     + "".join(f'<p class="note">{html.escape(note)}</p>' for note in block.notes)
                     + (_img(charts[block.key]) if block.key in charts else "") + "</div>")
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in general_notes(blocks)]
    return "".join(parts) + "</section>"


def html_page(report, figures: list) -> str:
    """One file: the summary first, styles inline, PNGs as data URIs, a table of contents; no scripts."""
    charts = {figure.block: figure for figure in figures if figure.kind == "scores"}
    others = [figure for figure in figures if figure.kind != "scores"]
    sections = [("summary", "Summary: which method to use")] + [(table.key, table.title) for table in report.tables]
    sections += [(figure.key, figure.caption) for figure in others] + [("provenance", "Provenance")]
    toc = "".join(f'<li><a href="#{key}">{html.escape(name)}</a></li>' for key, name in sections)
    body = [f"<h1>{html.escape(report.title)}</h1>", f'<p class="lede">{html.escape(" ".join(report.intro))}</p>',
            _summary_html(report.summary, charts), f'<nav><h2>Contents</h2><ol>{toc}</ol></nav>']
    for table in report.tables:
        text = table.text_columns()
        rows = "".join("<tr>" + "".join(_html_cell(c, is_text) for c, is_text in zip(row, text)) + "</tr>"
                       for row in table.rows)
        notes = "".join(f'<p class="note">{html.escape(note)}</p>' for note in table.notes)
        body.append(f'<section id="{table.key}"><h2>{html.escape(table.title)}</h2>'
                    f"{_html_table(table.columns, [rows], text)}{notes}</section>")
    for figure in others:
        body.append(f'<section id="{figure.key}"><h2>{html.escape(figure.caption)}</h2>{_img(figure)}</section>')
    body.append('<footer id="provenance"><h2>Provenance</h2>'
                + "".join(f"<p>{html.escape(line)}</p>" for line in report.provenance) + "</footer>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(report.title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
