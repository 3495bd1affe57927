"""The report's figures (matplotlib, Agg backend, PNG bytes), per model, task and data size: score per
method with its spread over seeds beside the baselines (the summary's chart), score against trainable
parameters, against peak memory and against forgetting (text-to-text runs) with the Pareto front, validation loss against wall time (Pu et al.
Figure 1), training loss per epoch, and predicted labels (Hamilton & Mueller Table 4).

Every method keeps one colour and marker in every figure, legends sit outside the axes (labels cannot
overlap points or each other), and files are named by what they show: `pareto-params-<model>-<task>-<scale>`."""

import io
from dataclasses import dataclass

from peftbench.configurations import Config
from peftbench.report.configs import model_title, scale_name
from peftbench.stats import METRIC_RANGES
from peftbench.report.summary import Block
from peftbench.report.tables import answer_order

# 20 colours that differ from each other (tab20's dark halves, then its light halves), and markers
# that cycle at another period: a (colour, marker) pair repeats only after 220 methods.
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h"]
# Baselines are lines across the axes, one style each in the order the report first shows them.
BASELINE_LINES = [("--", "#555555"), (":", "#8c2d04"), ("-.", "#777777")]
WIDTH = 7.5  # inches of axes; the legend is added beside them


@dataclass
class Figure:
    kind: str  # scores, pareto-params, pareto-memory, pareto-forgetting, val-loss, train-loss, predictions
    caption: str
    png: bytes
    block: str  # Block.key of the block it belongs to

    @property
    def key(self) -> str:
        """The PNG's file name (without .png) and the HTML anchor."""
        return f"{self.kind}-{self.block}"


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both cost (x, lower is better) and score (y, higher is better),
    sorted by cost."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def styles(labels: list[str]) -> dict[str, tuple[str, str]]:
    """label -> (colour, marker), fixed for the whole report."""
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors
    palette = [tab20[i] for i in range(0, 20, 2)] + [tab20[i] for i in range(1, 20, 2)]
    return {label: (palette[i % len(palette)], MARKERS[i % len(MARKERS)]) for i, label in enumerate(labels)}


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _legend(axis) -> None:
    handles, names = axis.get_legend_handles_labels()
    if handles:
        axis.legend(handles, names, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=8,
                    frameon=False)


def baseline_styles(labels: list[str]) -> dict[str, tuple[str, str]]:
    """baseline label -> (line style, colour), fixed for the whole report; the last style repeats."""
    return {label: BASELINE_LINES[min(i, len(BASELINE_LINES) - 1)] for i, label in enumerate(labels)}


def _baselines(axis, block: Block, vertical: bool, lines: dict[str, tuple[str, str]]) -> None:
    for config in block.baselines:
        summary = config.score()
        if summary is None:
            continue
        style, colour = lines[config.label]
        draw = axis.axvline if vertical else axis.axhline
        draw(summary.mean, linestyle=style, color=colour, linewidth=1.2, label=f"{config.label} {summary.mean:.3f}")


def _metric(block: Block) -> str:
    return block.trained[0].metric or "score"


def _title(block: Block, what: str) -> str:
    return f"{model_title(block.model)} · {block.task} · {scale_name(block.scale)}\n{what}"


def _score_panel(axis, block: Block, ranked: list[Config], style: dict, span: tuple[float, float]) -> None:
    for row, config in enumerate(ranked):
        colour, marker = style[config.label]
        summary = config.score()
        seeds = [run["score"] for run in config.runs if run.get("score") is not None]
        axis.scatter(seeds, [row] * len(seeds), s=14, color=colour, alpha=0.55, zorder=2)
        axis.errorbar(summary.mean, row, xerr=summary.std if summary.std else None, fmt=marker, color=colour,
                      markersize=8, capsize=4, elinewidth=1.5, zorder=3)
    _baselines(axis, block, vertical=True, lines=style)
    axis.set_xlim(*span)
    axis.set_ylim(-0.6, len(ranked) - 0.4)
    axis.grid(axis="x", alpha=0.3)


def _span(values: list[float], bounds: tuple[float, float] | tuple[None, None]) -> tuple[float, float]:
    pad = max(0.01, 0.08 * (max(values) - min(values)))
    low, high = min(values) - pad, max(values) + pad
    return (max(low, bounds[0]) if bounds[0] is not None else low, min(high, bounds[1]) if bounds[1] is not None else high)


def scores_figure(plt, block: Block, style: dict) -> bytes:
    """Methods best first; seeds as small dots, the mean with ± one std over seeds; baselines as lines. When a
    baseline lies far from the methods, a second panel zooms in on the methods so their differences show."""
    ranked = sorted((c for c in block.trained if c.score()), key=lambda c: c.score().mean)
    bounds = METRIC_RANGES.get(_metric(block), (None, None))
    methods = [run["score"] for c in ranked for run in c.runs if run.get("score") is not None]
    baselines = [s.mean for c in block.baselines if (s := c.score())]
    whole, zoom = _span(methods + baselines, bounds), _span(methods, bounds)
    split = baselines and (whole[1] - whole[0]) > 3 * (zoom[1] - zoom[0])
    height = 0.9 + 0.38 * max(len(ranked), 2)
    if split:
        from matplotlib.ticker import MaxNLocator

        figure, (left, right) = plt.subplots(1, 2, figsize=(WIDTH, height + 0.4), sharey=True, layout="constrained",
                                             gridspec_kw={"width_ratios": [1, 2]})
        _score_panel(left, block, ranked, style, whole)
        left.xaxis.set_major_locator(MaxNLocator(3))
        _score_panel(right, block, ranked, style, zoom)
        left.set_title("with the baselines", fontsize=9)
        right.set_title("zoomed in on the methods", fontsize=9)
        axes = (left, right)
    else:
        figure, axis = plt.subplots(figsize=(WIDTH, height + 0.4), layout="constrained")
        _score_panel(axis, block, ranked, style, whole)
        axes = (axis,)
    axes[0].set_yticks(range(len(ranked)), [c.label for c in ranked], fontsize=9)
    for axis in axes:
        axis.set_xlabel(f"{_metric(block)} on the test set")
    seeds = sorted({c.seeds for c in block.trained})
    spread = "one seed: no spread" if seeds == [1] else "bars: ± one std over seeds; small dots: each seed"
    figure.suptitle(_title(block, f"{_metric(block)} per method, best at the top ({spread})"), fontsize=10)
    _legend(axes[-1])
    return _png(figure)


def _tradeoff(plt, block: Block, style: dict, cost, xlabel: str, log: bool, note: str = "",
              from_zero: bool = True) -> bytes | None:
    """Score against a cost (lower is better) with the Pareto front; a linear axis starts at zero unless the
    cost can be negative (`from_zero=False`: forgetting, where zero, no change, is drawn as a line)."""
    figure, axis = plt.subplots(figsize=(WIDTH, 4.6))
    points = []
    for config in block.trained:
        costs = [cost(run) for run in config.runs]
        summary = config.score()
        if summary is None or any(x is None for x in costs):
            continue
        x_summary = config.summary(cost)
        colour, marker = style[config.label]
        point = (x_summary.mean, summary.mean)
        points.append(point)
        axis.errorbar(*point, xerr=x_summary.std if x_summary.std else None, yerr=summary.std if summary.std else None,
                      fmt=marker, color=colour, markersize=8, capsize=3, elinewidth=1, label=config.label, zorder=3)
    if not points:
        plt.close(figure)
        return None
    front = pareto_front(points)
    axis.plot(*zip(*front), "-", color="#333333", alpha=0.6, linewidth=1.2, zorder=1, label="Pareto front")
    _baselines(axis, block, vertical=False, lines=style)
    if log:
        axis.set_xscale("log")
    elif from_zero:
        axis.set_xlim(left=0, right=max(x for x, _ in points) * 1.15)
    else:
        axis.axvline(0, color="#999999", linewidth=0.8, zorder=0)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(f"{_metric(block)} (mean ± std over seeds)")
    axis.grid(alpha=0.3)
    axis.set_title(_title(block, f"{_metric(block)} against {xlabel.split(' (')[0]}"), fontsize=10)
    if note:
        axis.text(0.01, 0.01, note, transform=axis.transAxes, fontsize=8, color="#444444", va="bottom", wrap=True)
    _legend(axis)
    return _png(figure)


def _memory_note(block: Block) -> str:
    """CPU resident set includes the process: say how much of the spread is noise."""
    kinds = {run.get("peak_memory_kind") for c in block.trained for run in c.runs}
    if "cpu_peak_rss" not in kinds:
        return ""
    spreads = [s.std / 2**30 for c in block.trained if (s := c.summary(lambda r: r.get("peak_memory_bytes"))) and s.std]
    noise = f"; runs of one method differ by up to {max(spreads):.2f} GiB (std)" if spreads else ""
    return f"CPU peak resident set: includes Python and torch themselves{noise}"


def _curves(plt, block: Block, style: dict, x_key: str, y_key: str, xlabel: str, ylabel: str) -> bytes:
    from matplotlib.ticker import MaxNLocator

    figure, axis = plt.subplots(figsize=(WIDTH, 4.2))
    for config in block.trained:
        colour, marker = style[config.label]
        for j, run in enumerate(config.runs):
            curve = run.get("curve") or []
            axis.plot([p[x_key] for p in curve], [p[y_key] for p in curve], marker=marker, color=colour,
                      markersize=4, linewidth=1, alpha=0.9, label=config.label if j == 0 else None)
    if x_key == "epoch":
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set(xlabel=xlabel, ylabel=ylabel)
    axis.grid(alpha=0.3)
    axis.set_title(_title(block, f"{ylabel} against {xlabel} (each seed a line)"), fontsize=10)
    _legend(axis)
    return _png(figure)


def _prediction_bars(plt, block: Block, style: dict) -> bytes | None:
    from matplotlib.ticker import MaxNLocator

    counted = [c for c in block.trained if (c.runs[0].get("metrics") or {}).get("prediction_counts")]
    if not counted:
        return None
    answers = answer_order(counted[0].runs[0]["metrics"]["prediction_counts"])
    figure, axis = plt.subplots(figsize=(WIDTH, 3.8))
    width = 0.8 / len(counted)
    for i, config in enumerate(counted):
        means = [sum(run["metrics"]["prediction_counts"].get(a, 0) for run in config.runs) / len(config.runs)
                 for a in answers]
        axis.bar([k + i * width for k in range(len(answers))], means, width, label=config.label,
                 color=style[config.label][0])
    axis.set_xticks([k + 0.4 - width / 2 for k in range(len(answers))], answers)
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set(ylabel="test predictions (mean over seeds)")
    axis.set_title(_title(block, "how often each answer was given"), fontsize=10)
    _legend(axis)
    return _png(figure)


def figures(summary: list[Block], all_labels: list[str], baseline_labels: list[str]) -> list[Figure]:
    """Every figure of the report, block by block."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {**styles(all_labels), **baseline_styles(baseline_labels)}
    result = []

    def add(kind: str, block: Block, caption: str, png: bytes | None) -> None:
        if png is not None:
            result.append(Figure(kind, caption, png, block.key))

    for block in summary:
        where = f"{block.model}, {block.task}, {scale_name(block.scale)}"
        add("scores", block, f"Score per method: {where}", scores_figure(plt, block, style))
        add("pareto-params", block, f"Score against trainable parameters: {where}",
            _tradeoff(plt, block, style, lambda r: r.get("trainable_params") or None, "trainable parameters (log scale)",
                      log=True))
        add("pareto-memory", block, f"Score against peak memory: {where}",
            _tradeoff(plt, block, style, lambda r: (r.get("peak_memory_bytes") or 0) / 2**30 or None,
                      "peak memory (GiB, axis from 0)", log=False, note=_memory_note(block)))
        add("pareto-forgetting", block, f"Score against forgetting: {where}",
            _tradeoff(plt, block, style, lambda r: r.get("forgetting"),
                      "forgetting (change in loss per token on held-out general text, nats)", log=False,
                      from_zero=False))
        add("val-loss", block, f"Validation loss against wall time: {where}",
            _curves(plt, block, style, "seconds", "val_loss", "wall time (s)", "validation loss"))
        if any(len(run.get("curve") or []) > 1 for c in block.trained for run in c.runs):
            add("train-loss", block, f"Training loss per epoch: {where}",
                _curves(plt, block, style, "epoch", "train_loss", "epoch", "training loss"))
        add("predictions", block, f"Predictions: {where}", _prediction_bars(plt, block, style))
    return result


def labels_in_order(items: list[Config], kind: str = "train") -> list[str]:
    return list(dict.fromkeys(c.label for c in items if c.kind == kind))
