"""`peftbench report`: tables, statistics and plots from a results store, written as Markdown, CSV,
LaTeX and one self-contained HTML page. `peftbench run` writes its summary with the same code."""

from dataclasses import dataclass
from pathlib import Path

from peftbench.errors import UserError
from peftbench.report import render
from peftbench.report.tables import Config, Table, all_tables, runs_table

FORMATS = ("md", "csv", "tex", "html")


@dataclass
class Report:
    title: str
    intro: list[str]
    tables: list[Table]
    configs: list[Config]


def parse_formats(text: str) -> list[str]:
    formats = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"unknown report format '{','.join(unknown) or text}'; choose from {','.join(FORMATS)}"
                        " (comma-separated, e.g. --format md,html)")
    return list(dict.fromkeys(formats))


def build(rows: list[dict], title: str) -> Report:
    tables, configs, _ = all_tables(rows)
    trained = [c for c in configs if c.kind == "train"]
    statuses = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    seeds = sorted({c.seeds for c in trained})
    intro = [f"{len(rows)} stored runs ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))});"
             f" {len(trained)} trained configurations."]
    if seeds == [1]:
        intro.append("Every configuration has one seed: the numbers carry no estimate of seed variance, so"
                     " small differences between methods should not be read as real.")
    elif seeds:
        intro.append(f"Seeds per configuration: {'/'.join(map(str, seeds))}; mean ± std over seeds, 95% intervals"
                     " in the statistics table, and a paired bootstrap for the top two methods of each block.")
    if not any(t.key == "cost" for t in tables):
        intro.append("No run has a known price, so there is no cost table.")
    return Report(title, intro, tables, configs)


def summary_markdown(rows: list[dict], title: str) -> str:
    """The Markdown `peftbench run` writes next to the store: the report's tables, without plots."""
    report = build(rows, title)
    return render.markdown(report.title, report.intro, report.tables)


def runs_view(rows: list[dict], title: str):
    """The terminal table of `run` and `results`: one line per run."""
    return render.rich_table(runs_table(rows), title)


def write(report: Report, out: Path, formats: list[str]) -> list[Path]:
    """Write the report under `out` (report.md, report.html, csv/ and tex/ one file per table, plots/
    the PNGs when Markdown or HTML is asked for); returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    figures = {}
    if "md" in formats or "html" in formats:
        from peftbench.report.plots import figures as make_figures

        figures = make_figures(report.configs)
    images = {}
    if figures and "md" in formats:
        (out / "plots").mkdir(exist_ok=True)
        for i, (caption, png) in enumerate(figures.items()):
            path = out / "plots" / f"figure-{i + 1}.png"
            path.write_bytes(png)
            images[caption] = f"plots/{path.name}"
            written.append(path)
    if "md" in formats:
        written.append(_write(out / "report.md", render.markdown(report.title, report.intro, report.tables, images)))
    for kind, render_table in (("csv", render.csv_text), ("tex", render.tex_table)):
        if kind in formats:
            (out / kind).mkdir(exist_ok=True)
            written += [_write(out / kind / f"{table.key}.{kind}", render_table(table)) for table in report.tables]
    if "html" in formats:
        written.append(_write(out / "report.html", render.html_page(report.title, report.intro, report.tables, figures)))
    return written


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
