"""Ranking from measurements: the store's finished runs of one data size, each method's measurement relative to
the best in its block (model × task × data size), over the blocks every ranked method ran on; methods that broke
a hard limit or did not learn excluded, and warnings where a lead is within noise."""

import math
from collections import defaultdict
from dataclasses import dataclass

from peftbench.configurations import Config, at_tuned_settings
from peftbench.recommend.answer import Choice, Limits, Recommendation
from peftbench.recommend.coverage import block_name, block_of, shared_blocks
from peftbench.stats import summarise

MEASURES = {  # priority -> (stored key, higher is better)
    "performance": ("score", True), "memory": ("peak_memory_bytes", False), "time": ("wall_s", False),
    "inference": ("infer_tokens_per_s", True)}


def _relative(group: list[Config], measure: str) -> dict[str, float]:
    """Each configuration's mean measurement as a share of the group's best (1.0 = the best)."""
    key, higher = MEASURES[measure]
    means = {c.label: s.mean for c in group if (s := c.summary(lambda run: run.get(key))) is not None}
    if not means:
        return {}
    best = max(means.values()) if higher else min(means.values())
    if higher:
        return {label: value / best if best > 0 else float(value == best) for label, value in means.items()}
    return {label: best / value if value > 0 else 1.0 for label, value in means.items()}


def _broken_limit(config: Config, limits: Limits) -> str | None:
    for run in config.runs:
        peak = run.get("peak_memory_bytes")
        if limits.max_memory_gb is not None and peak is not None and peak / 1e9 > limits.max_memory_gb:
            return f"peak memory {peak / 1e9:.2f} GB > --max-memory-gb {limits.max_memory_gb:g} (run {run['run_id']})"
        if limits.max_minutes is not None and run.get("wall_s") is not None and run["wall_s"] / 60 > limits.max_minutes:
            return f"{run['wall_s'] / 60:.2f} minutes > --max-minutes {limits.max_minutes:g} (run {run['run_id']})"
        if limits.max_usd is not None:
            cost = run.get("cost_usd")
            if cost is None:
                return f"no price known for run {run['run_id']}, so --max-usd {limits.max_usd:g} cannot be checked"
            if cost > limits.max_usd:
                return f"${cost:.4f} > --max-usd {limits.max_usd:g} (run {run['run_id']})"
    return None


def _measure(config: Config, priority: str):
    key, _ = MEASURES[priority]
    return config.score() if priority == "performance" else config.summary(lambda run: run.get(key))


def _rounded(value: float) -> float:
    return round(value, 3)  # shares are shown as whole percents: equal at 0.1% is a tie to a reader


def _tie_reasons(order: list[str], relative: dict, priority: str) -> dict[str, str]:
    """label -> why it sits where it does when its priority share equals a neighbour's."""
    reasons = {}
    for before, after in zip(order, order[1:]):
        share = _mean(relative[before][priority])
        if _rounded(share) != _rounded(_mean(relative[after][priority])):
            continue
        scores = [_rounded(_mean(relative[label]["performance"])) for label in (before, after)]
        how = ("their scores tie too, so they keep the report's order (full tuning first, then as stored)"
               if scores[0] == scores[1]
               else f"{before} is placed first by its higher score")
        for label, other in ((before, after), (after, before)):
            reasons.setdefault(label, f"ties with {other} on {priority} ({share:.0%} of the best); {how}")
    return reasons


@dataclass
class Noise:
    """Why a ranking's lead may not be real: `long` for `recommend`, `short` for a summary cell."""

    kind: str  # one_seed | within_spread | cpu_memory
    long: str
    short: str


CPU_MEMORY = ("Peak memory here is the CPU process's peak resident set, which includes Python and torch"
              " themselves and moves between runs of one method by tenths of a GB: only differences well beyond"
              " that spread say anything about the methods. Measure on a GPU (CUDA max_memory_allocated) or with"
              " `peftbench profile`, which isolates training's own memory.")


def _cpu_memory(configs_of: list[Config]) -> Noise:
    """How far CPU resident-set peaks can rank methods: their spread between methods against the spread
    between runs of one method (unknown with one seed)."""
    summaries = [m for c in configs_of if (m := _measure(c, "memory"))]
    means = [m.mean / 1e9 for m in summaries]
    span = f"{min(means):.2f}–{max(means):.2f} GB across methods"
    spreads = [m.std / 1e9 for m in summaries if m.std is not None]
    if not spreads:
        verdict = "with one seed its run-to-run spread is unknown"
    elif max(means) - min(means) > 2 * max(spreads):
        verdict = f"differences beyond its {max(spreads):.2f} GB run-to-run spread may be real"
    else:
        verdict = f"within its {max(spreads):.2f} GB run-to-run spread: it does not rank these methods"
    return Noise("cpu_memory", f"{CPU_MEMORY} Here: {span}; {verdict}.",
                 f"CPU resident set ({span}): {verdict}")


def noise(groups: dict[tuple, list[Config]], order: list[str], priority: str) -> list[Noise]:
    """Warnings that the ranking's lead on `priority` cannot be told from measurement noise: one seed,
    a lead smaller than the seeds' spread, or CPU resident-set memory (mostly the process itself).
    `groups`: the compared configurations by block (coverage.Block)."""
    configs_of = [c for group in groups.values() for c in group]
    if len(order) < 2:
        return []
    found = []
    if {c.seeds for c in configs_of} == {1}:
        found.append(Noise("one_seed", f"One seed per configuration: the {priority} differences between methods"
                           " cannot be told from seed noise; run more seeds (--seed 0 --seed 1 --seed 2) before"
                           " deciding on them.", "one seed: cannot be told from noise"))
    first, second = order[:2]
    close = []
    for block, group in groups.items():
        a = next((_measure(c, priority) for c in group if c.label == first), None)
        b = next((_measure(c, priority) for c in group if c.label == second), None)
        if a and b and a.std is not None and b.std is not None and abs(a.mean - b.mean) <= max(a.std, b.std):
            close.append(block_name(block))
    if close:
        found.append(Noise("within_spread", f"{first} leads {second} on {priority} by less than their seed-to-seed"
                           f" spread on {', '.join(close)}: the order between them is within measurement noise.",
                           f"lead over {second} is within the seeds' spread: a tie in effect"))
    if priority == "memory" and "cpu_peak_rss" in {run.get("peak_memory_kind") for c in configs_of for run in c.runs}:
        found.append(_cpu_memory(configs_of))
    return found


def _limit_values(config: Config) -> dict[str, tuple[float | None, str]]:
    """Per limit flag: the configuration's worst run and how to show it."""
    peaks = [run["peak_memory_bytes"] / 1e9 for run in config.runs if run.get("peak_memory_bytes") is not None]
    minutes = [run["wall_s"] / 60 for run in config.runs if run.get("wall_s") is not None]
    costs = [run.get("cost_usd") for run in config.runs]
    return {"--max-memory-gb": (max(peaks, default=None), "GB peak memory"),
            "--max-minutes": (max(minutes, default=None), "minutes"),
            "--max-usd": (None if None in costs else max(costs, default=None), "USD")}


def _ceil3(value: float) -> float:
    """Rounded up to three significant digits: a limit set to it keeps the value."""
    if value <= 0:
        return value
    step = 10 ** (math.floor(math.log10(value)) - 2)
    return round(math.ceil(value / step - 1e-9) * step, 12)


def _nearest(trained: list[Config], limits: Limits) -> list[str]:
    """When the limits exclude every method: per limit, how many it excluded and the method closest to it
    (a method's worst run over all its model × task groups, since every run must pass)."""
    notes = []
    for flag, limit in (("--max-memory-gb", limits.max_memory_gb), ("--max-minutes", limits.max_minutes),
                        ("--max-usd", limits.max_usd)):
        if limit is None:
            continue
        worst: dict[str, tuple[float | None, str]] = {}
        for config in trained:
            value, unit = _limit_values(config)[flag]
            known = worst.get(config.label, (0.0, unit))[0]
            worst[config.label] = (None if value is None or known is None else max(value, known), unit)
        measured = {label: entry for label, entry in worst.items() if entry[0] is not None}
        over = sorted((value, label, unit) for label, (value, unit) in measured.items() if value > limit)
        if not measured:
            notes.append(f"{flag} {limit:g}: no run has this measurement"
                         + (" (no price known: set the suite's price)" if flag == "--max-usd" else ""))
        elif over:
            value, label, unit = over[0]
            notes.append(f"{flag} {limit:g} excludes {len(over)} method(s); the nearest is {label} at {value:.3g}"
                         f" {unit} ({value - limit:.2g} over): {flag} {_ceil3(value):g} would keep it")
    return notes


def _excluded(trained: list[Config], limits: Limits) -> dict[str, str]:
    """Method -> why it is never recommended: any run over a hard limit, or any configuration of it that did
    not learn (on any of its blocks: where it learned nothing it is no safe choice)."""
    excluded = {}
    for config in trained:
        reason = _broken_limit(config, limits)
        if reason is None and config.learning.excluded:
            reason = f"did not learn on {block_name(block_of(config))} ({config.learning.evidence})"
        if reason and config.label not in excluded:
            excluded[config.label] = reason
    return excluded


def from_measurements(items: list[Config], kind: str, n: int, size: int, priority: str,
                      limits: Limits) -> Recommendation:
    """Rank method specs by the priority's measurement relative to the best in each block (model × task ×
    data size, so tasks of different difficulty weigh alike), averaged over the blocks every ranked method ran
    on (coverage.shared_blocks); ties go to the better score, and are said. A method with any run over a hard
    limit, or any configuration that did not learn (peftbench.learning), is excluded with the reason. A method
    tuned in a block is ranked at its tuned setting there (configurations.at_tuned_settings), and said so.
    `items`: the configurations (configurations.configs) of the finished runs of one task type and data size."""
    items, tuned_notes = at_tuned_settings(items)
    trained = [c for c in items if c.kind == "train"]
    excluded = _excluded(trained, limits)
    coverage = shared_blocks([c for c in trained if c.label not in excluded])
    excluded |= {label: f"not compared: it ran only on {', '.join(map(block_name, blocks))}, and no block holds it"
                        " with every other method" for label, blocks in coverage.dropped.items()}
    allowed = [c for c in trained if c.label in coverage.methods and block_of(c) in coverage.shared]
    groups: dict[tuple, list[Config]] = defaultdict(list)
    for config in allowed:
        groups[block_of(config)].append(config)
    relative: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for group in groups.values():
        for measure in {priority, "performance"}:
            for label, share in _relative(group, measure).items():
                relative[label][measure].append(share)
    order = sorted(relative, key=lambda label: (-_rounded(_mean(relative[label][priority])),
                                                -_rounded(_mean(relative[label]["performance"]))))
    ties = _tie_reasons(order, relative, priority)
    randoms = sorted({c.model for c in trained if c.random_weights})
    ranking = []
    for label in order:
        mine = [c for c in allowed if c.label == label]
        runs = [run for c in mine for run in c.runs]
        peak = max((run.get("peak_memory_bytes") or 0 for run in runs), default=0) / 1e9
        seconds = max((run.get("wall_s") or 0 for run in runs), default=0)
        infer = summarise([run.get("infer_tokens_per_s") for run in runs])
        reasons = [f"{priority}: {_mean(relative[label][priority]):.0%} of the best on average over"
                   f" {len(relative[label][priority])} model × task × data size block(s)"]
        reasons += [ties[label]] if label in ties else []
        for config in mine:
            score = config.score()
            if score:
                spread = f" ± {score.std:.3f} over {score.n} seeds" if score.std is not None else " (one seed: spread unknown)"
                weights = " (random weights: not evidence about the method)" if config.random_weights else ""
                learned = "" if config.random_weights else f"; {config.learning.headline}"
                reasons.append(f"score {score.mean:.3f}{spread} on {config.model} / {config.task}{weights}{learned}")
        reasons.append(f"peak memory up to {peak:.2f} GB, up to {seconds:,.1f} s per run"
                       + (f", inference {infer.mean:,.0f} tokens/s" if infer else ""))
        ranking.append(Choice(label, reasons, evidence=[run["run_id"] for run in runs]))
    blocks = sorted({block_of(c) for c in trained})
    notes = [f"Ranked from measurements: {sum(c.seeds for c in trained)} finished {kind} runs"
             f" with {size} training examples (asked: {n}) on " + ", ".join(map(block_name, blocks)) + "."]
    notes += coverage.notes() + tuned_notes
    if randoms:
        notes.append(f"{', '.join(randoms)}: random weights. Their scores exercise the pipeline and say nothing"
                     " about the methods; no significance is claimed.")
    notes += [n.long for n in noise(groups, order, priority)]
    notes += _baseline_notes(trained)
    if not ranking:
        notes.append(_none_left(trained, limits))
    return Recommendation("measurements", kind, n, priority, ranking,
                          [{"method": label, "reason": reason} for label, reason in excluded.items()], notes,
                          [block_name(block) for block in coverage.shared])


def _none_left(trained: list[Config], limits: Limits) -> str:
    """Why nothing is ranked: no method learned, or the limits exclude every one (and what would keep one)."""
    if trained and all(c.learning.excluded for c in trained):
        return ("No measured method learned: none scored significantly above the best baseline, so none is"
                " recommended (the exclusions say by how much).")
    nearest = _nearest(trained, limits)
    return "No measured method meets the hard limits" + (": " + "; ".join(nearest) if nearest else "") + "."


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else -math.inf


def _baseline_notes(trained: list[Config]) -> list[str]:
    """Hamilton & Mueller's finding, where it repeats: on a block, no method learned."""
    blocks: dict[tuple, list[Config]] = defaultdict(list)
    for config in trained:
        blocks[block_of(config)].append(config)
    return [f"On {block_name(block)} no method learned (none scored significantly above the"
            f" {group[0].learning.baseline} baseline): as Hamilton & Mueller found with OPT-125m/350m (Table 1,"
            " 4.3), a larger base model may be needed before any method helps."
            for block, group in blocks.items() if all(c.learning.excluded for c in group)]
