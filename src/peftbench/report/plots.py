"""The report's figures (matplotlib, Agg backend, PNG bytes): per model, task and data scale, validation
loss against wall time (Pu et al. Figure 1) and training loss per epoch; score against trainable
parameters and against peak memory with the Pareto front marked; prediction-distribution bars."""

import io
from collections import defaultdict

from peftbench.report.tables import Config, answer_order, scale_name


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both cost (x, lower is better) and score (y, higher is better),
    sorted by cost."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return buffer.getvalue()


def _tradeoff(axis, trained: list[Config], colours: list[str], cost, xlabel: str, log: bool) -> None:
    points = []
    for config, colour in zip(trained, colours):
        xs = [cost(run) for run in config.runs]
        summary = config.summary(lambda r: r.get("score"))
        if summary is None or any(x is None for x in xs):
            continue
        point = (sum(xs) / len(xs), summary.mean)
        points.append(point)
        axis.scatter(*point, s=30, color=colour)
        axis.annotate(config.label, point, fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = pareto_front(points)
    if front:
        axis.plot(*zip(*front), "k--o", linewidth=1, markersize=11, fillstyle="none", label="Pareto front")
        axis.legend(fontsize=7)
    if log:
        axis.set_xscale("log")
    axis.set_xlabel(xlabel)
    axis.set_ylabel("score (mean over seeds)")


def figures(items: list[Config]) -> dict[str, bytes]:
    """Caption -> PNG, one figure of four panels per model, task and data scale with trained runs, and
    one bar chart of predicted labels per such block of classification."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks: dict[tuple, list[Config]] = defaultdict(list)
    for config in items:
        if config.kind == "train":
            blocks[(config.model, config.task, config.scale)].append(config)
    result = {}
    for (model, task, scale), trained in blocks.items():
        figure, axes = plt.subplots(2, 2, figsize=(11, 8))
        cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        colours = [cycle[i % len(cycle)] for i in range(len(trained))]
        for config, colour in zip(trained, colours):
            for j, run in enumerate(config.runs):
                curve = run.get("curve") or []
                label = config.label if j == 0 else None
                axes[0, 0].plot([p["seconds"] for p in curve], [p["val_loss"] for p in curve], "o-", color=colour,
                                label=label, markersize=3, linewidth=1)
                axes[0, 1].plot([p["epoch"] for p in curve], [p["train_loss"] for p in curve], "o-", color=colour,
                                label=label, markersize=3, linewidth=1)
        axes[0, 0].set(xlabel="wall time (s)", ylabel="validation loss", title="validation loss vs time")
        axes[0, 1].set(xlabel="epoch", ylabel="training loss", title="training loss")
        axes[0, 0].legend(fontsize=7)
        _tradeoff(axes[1, 0], trained, colours, lambda r: r.get("trainable_params") or None,
                  "trainable parameters (log)", log=True)
        _tradeoff(axes[1, 1], trained, colours, lambda r: (r.get("peak_memory_bytes") or 0) / 2**30 or None,
                  "peak memory (GiB)", log=False)
        figure.suptitle(f"{model} · {task} · {scale_name(scale)} (each seed a line)")
        result[f"Curves and trade-offs: {model}, {task}, {scale_name(scale)}"] = _png(figure)
        counted = [c for c in trained if (c.runs[0].get("metrics") or {}).get("prediction_counts")]
        if counted:
            result[f"Predictions: {model}, {task}, {scale_name(scale)}"] = _prediction_bars(counted, plt)
    return result


def _prediction_bars(configs: list[Config], plt) -> bytes:
    answers = answer_order(configs[0].runs[0]["metrics"]["prediction_counts"])
    figure, axis = plt.subplots(figsize=(11, 3.5))
    width = 0.8 / len(configs)
    for i, config in enumerate(configs):
        means = [sum(run["metrics"]["prediction_counts"].get(a, 0) for run in config.runs) / len(config.runs)
                 for a in answers]
        axis.bar([k + i * width for k in range(len(answers))], means, width, label=config.label)
    axis.set_xticks([k + 0.4 - width / 2 for k in range(len(answers))], answers)
    axis.set(ylabel="predictions (mean over seeds)", title="prediction distribution")
    axis.legend(fontsize=7)
    return _png(figure)
