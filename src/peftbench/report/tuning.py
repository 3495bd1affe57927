"""What tuning changed, per model x task x data size tuned by `peftbench tune` (peftbench.tuning): a table of
every method at its defaults and at its tuned setting (in the report, and as `peftbench tune` prints it), and a
sensitivity plot, the validation metric of each trial against its learning rate, a line per method (Lialin et
al. section 13: PEFT methods are highly sensitive to their hyper-parameters)."""

from peftbench.configurations import fmt_lr
from peftbench.report.configs import Cell, Table, fmt, model_title, scale_name, slug
from peftbench.report.plots import WIDTH, Figure, _legend, _png, styles
from peftbench.terminal import Col
from peftbench.tuning.space import LR
from peftbench.tuning.summary import StudySummary


def params_text(params: dict) -> str:
    return ", ".join(f"lr {fmt_lr(value)}" if name == LR else f"{name} {value}" for name, value in params.items())


def trials_text(study: StudySummary) -> str:
    counts = study.trials
    shown = [f"{counts.get('complete', 0)} done", f"{counts.get('pruned', 0)} pruned"]
    shown += [f"{counts[state]} {state}" for state in counts if state not in ("complete", "pruned")]
    return ", ".join(shown)


def _block_key(study: StudySummary) -> str:
    return f"{slug(study.model)}-{slug(study.task)}-{slug(scale_name(study.scale))}"


def by_block(found: list[StudySummary]) -> dict[str, list[StudySummary]]:
    """Studies grouped by the report's block key (report.summary.Block.key)."""
    blocks: dict[str, list[StudySummary]] = {}
    for study in found:
        blocks.setdefault(_block_key(study), []).append(study)
    return blocks


def _score_cell(scored) -> Cell:
    score = scored.score if scored else None
    if score is None:
        return Cell("–")
    return Cell(fmt(score.mean) + (f" ± {fmt(score.std)}" if score.std is not None else ""), score.mean, score.std)


COLUMNS = ["method", "trials", "default", "tuned", "change", "best setting", "cost"]
TERMINAL = [Col("method", "name"), Col("trials", "text"), Col("default", "number"), Col("tuned", "number"),
            Col("change", "number"), Col("best setting", "text"), Col("cost", "number", optional=True)]


def study_cells(study: StudySummary) -> list[Cell]:
    """A study's line, in COLUMNS' order."""
    default, tuned = study.default, study.tuned
    gain = tuned.score.mean - default.score.mean if default and tuned and default.score and tuned.score else None
    best = ("the defaults" if tuned and default and tuned.trial == default.trial
            else params_text(tuned.params) if tuned else "no trial completed")
    ratio = study.cost_ratio
    return [Cell(study.method, study.method), Cell(trials_text(study), trials_text(study)), _score_cell(default),
            _score_cell(tuned), Cell("–" if gain is None else f"{gain:+.3f}", gain), Cell(best, best),
            Cell(f"{study.seconds:,.0f} s" + ("" if ratio is None else f" ({ratio:.1f}×)"), study.seconds)]


def _notes(studies: list[StudySummary]) -> list[str]:
    first = studies[0]
    seeds = sorted({s.tuned.score.n for s in studies if s.tuned and s.tuned.score})
    return [f"Test {first.metric or 'score'} at each method's defaults (trial 0) and at its tuned setting (the trial"
            f" with the best validation {first.select_by.removeprefix('val_')}), mean ± std over"
            f" {'/'.join(map(str, seeds)) or 'no'} seed(s). Every method had the same trials and epoch cap"
            f" ({sum(s.epochs for s in studies):,} epochs in all); a pruned trial stopped at a successive-halving"
            " rung. Trial 0 runs the defaults, so the tuned setting is never worse on validation. cost: the run time of"
            " the study (every trial and seed) and, in brackets, its multiple of the defaults' runs alone (what the"
            " untuned grid spends on the method)."]


def _title(study: StudySummary) -> str:
    return f"{model_title(study.model)}, {study.task}, {scale_name(study.scale)} ({study.n_train:,} training examples)"


def tuning_tables(found: list[StudySummary]) -> list[Table]:
    """Tuned against default, one table per block that has studies."""
    return [Table(f"tuning-{key}", f"Tuned against default: {_title(studies[0])}", COLUMNS,
                  [study_cells(study) for study in studies], _notes(studies))
            for key, studies in by_block(found).items()]


def tuning_views(found: list[StudySummary]) -> list[tuple[str, list[Col], list[list[str]], list[str]]]:
    """`peftbench tune`'s tables: the report's, for the terminal."""
    return [(f"tuned: {_title(studies[0])}", TERMINAL, [[cell.text for cell in study_cells(study)]
                                                         for study in studies], _notes(studies))
            for studies in by_block(found).values()]


def _sensitivity(plt, studies: list[StudySummary], style: dict, title: str) -> bytes | None:
    """Each method's trials: the validation value it was judged by against its learning rate (log scale), complete
    trials joined by a line in lr order, pruned ones hollow at the value they were stopped with, the defaults
    ringed and the chosen trial starred."""
    plotted = [s for s in studies if any(entry["value"] is not None for entry in s.validation)]
    if not plotted:
        return None
    colours = styles([s.method for s in plotted])
    figure, axis = plt.subplots(figsize=(WIDTH, 4.2))
    for study in plotted:
        colour, marker = style.get(f"{study.method} (tuned)", colours[study.method])
        done = sorted((e["params"]["lr"], e["value"]) for e in study.validation
                      if e["state"] == "complete" and e["value"] is not None)
        stopped = [(e["params"]["lr"], e["value"]) for e in study.validation
                   if e["state"] == "pruned" and e["value"] is not None]
        if done:
            axis.plot(*zip(*done), marker=marker, color=colour, linewidth=1.2, markersize=6, label=study.method)
        if stopped:
            axis.scatter(*zip(*stopped), marker=marker, facecolors="none", edgecolors=colour, s=36,
                         label=f"{study.method}, pruned")
        for scored, shape, size in ((study.default, "o", 160), (study.tuned, "*", 200)):
            entry = next((e for e in study.validation if scored and e["trial"] == scored.trial), None)
            if entry and entry["value"] is not None:
                axis.scatter([entry["params"]["lr"]], [entry["value"]], marker=shape, s=size, zorder=3,
                             facecolors="none" if shape == "o" else colour, edgecolors=colour)
    select = plotted[0].select_by
    metric = "validation loss (lower is better)" if select == "val_loss" else f"validation {plotted[0].metric or 'score'}"
    axis.set_xscale("log")
    axis.set(xlabel="starting learning rate (log scale)", ylabel=metric)
    axis.grid(alpha=0.3)
    axis.set_title(f"{title}\n{metric} of each trial against its learning rate; ○ the defaults, ★ the chosen trial",
                   fontsize=10)
    _legend(axis)
    return _png(figure)


def tuning_figures(found: list[StudySummary], style: dict) -> list[Figure]:
    """A sensitivity figure per block that has studies; `style` gives each configuration label its colour, so a
    method keeps the colour of its tuned configuration in the other figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = []
    for key, studies in by_block(found).items():
        first = studies[0]
        where = f"{model_title(first.model)} · {first.task} · {scale_name(first.scale)}"
        png = _sensitivity(plt, studies, style, where)
        if png is not None:
            result.append(Figure("sensitivity", f"Validation score against learning rate, each trial: {first.model},"
                                                f" {first.task}, {scale_name(first.scale)}", png, key))
    return result
