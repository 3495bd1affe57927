"""`peftbench report`: the answer first (a summary per model, task and data size: the recommended method
under each priority, its evidence and a chart), then tables, statistics and plots from a results store,
written as Markdown, CSV, LaTeX and one self-contained HTML page. `peftbench run` writes its summary with
the same code."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from peftbench.errors import UserError
from peftbench.report import render
from peftbench.configurations import Config
from peftbench.report.configs import Table
from peftbench.report.summary import Block, blocks
from peftbench.report.tables import all_tables
from peftbench.report.tuning import tuning_figures, tuning_tables
from peftbench.tuning.summary import StudySummary, summaries

FORMATS = ("md", "csv", "tex", "html")


@dataclass
class Report:
    title: str
    intro: list[str]
    summary: list[Block]
    tables: list[Table]
    configs: list[Config]
    provenance: list[str]
    studies: list[StudySummary]  # the tuning studies among the rows (peftbench tune)


def parse_formats(text: str) -> list[str]:
    formats = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"unknown report format '{','.join(unknown) or text}'; choose from {','.join(FORMATS)}"
                        " (comma-separated, e.g. --format md,html)")
    return list(dict.fromkeys(formats))


def _provenance(rows: list[dict], store: Path | None) -> list[str]:
    """Where the numbers come from: the store, the suites, when, on what, with which code."""
    finished = [row for row in rows if row.get("finished_at")]
    lines = [f"Store: {store}." if store else "Store: (rows given directly)."]
    lines.append("Suites: " + ", ".join(sorted({row["suite"] for row in rows})) + ".")
    if finished:
        first, last = (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(f(r["finished_at"] for r in finished)))
                       for f in (min, max))
        lines.append(f"Runs ended between {first} and {last}.")
    provenance = [row.get("provenance") or {} for row in rows]
    devices = sorted({p.get("device") for p in provenance if p.get("device")})
    commits = sorted({(p.get("git_commit") or "")[:7] + (" (dirty)" if p.get("git_dirty") else "")
                      for p in provenance if p.get("git_commit")})
    versions = sorted({", ".join(f"{k} {v}" for k, v in sorted((p.get("versions") or {}).items()))
                       for p in provenance if p.get("versions")})
    lines += [f"Devices: {'; '.join(devices)}."] if devices else []
    lines += [f"peftbench commits: {', '.join(commits)}."] if commits else []
    lines += [f"Versions: {v}." for v in versions]
    return lines


def build(rows: list[dict], title: str, store: Path | None = None) -> Report:
    tables, items, comparisons = all_tables(rows)
    studies = summaries(rows)
    after_scores = max((i for i, table in enumerate(tables) if table.key.startswith("scores-")), default=-1) + 1
    tables[after_scores:after_scores] = tuning_tables(studies)
    trained = [c for c in items if c.kind == "train"]
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
    return Report(title, intro, blocks(items, comparisons), tables, items, _provenance(rows, store), studies)


def summary_markdown(rows: list[dict], title: str, store: Path | None = None) -> str:
    """The Markdown `peftbench run` writes next to the store: the summary and the report's tables, without plots."""
    return render.markdown(build(rows, title, store))


def write(report: Report, out: Path, formats: list[str],
          on_progress: Callable[[str], None] = lambda message: None) -> list[Path]:
    """Write the report under `out` (report.md, report.html, csv/ and tex/ one file per table, plots/
    the PNGs when Markdown or HTML is asked for); returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    figures = []
    if "md" in formats or "html" in formats:
        from peftbench.report.plots import figures as make_figures
        from peftbench.report.plots import labels_in_order, styles

        on_progress(f"drawing the figures of {len(report.summary)} model × task × data size block(s)")
        figures = make_figures(report.summary, labels_in_order(report.configs),
                               labels_in_order(report.configs, "baseline"))
        figures += tuning_figures(report.studies, styles(labels_in_order(report.configs)))
    images = {}
    if figures and "md" in formats:
        (out / "plots").mkdir(exist_ok=True)
        for figure in figures:
            path = out / "plots" / f"{figure.key}.png"
            path.write_bytes(figure.png)
            images[figure.key] = f"plots/{path.name}"
            written.append(path)
    if "md" in formats:
        captions = {figure.key: figure.caption for figure in figures}
        written.append(_write(out / "report.md", render.markdown(report, images, captions)))
    for kind, render_table in (("csv", render.csv_text), ("tex", render.tex_table)):
        if kind in formats:
            (out / kind).mkdir(exist_ok=True)
            written += [_write(out / kind / f"{table.key}.{kind}", render_table(table)) for table in report.tables]
    if "html" in formats:
        on_progress("writing report.html")
        written.append(_write(out / "report.html", render.html_page(report, figures)))
    return written


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
