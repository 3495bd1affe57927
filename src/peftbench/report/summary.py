"""The report's first section, the answer: per model × task × data size, the method `peftbench recommend`
ranks first under each priority, with the evidence (score and its interval, memory, time, cost) and the
reasoning, including when the lead is within noise or a tie. The paper tables follow it."""

from dataclasses import dataclass, field

from peftbench.configurations import RANDOM_WEIGHTS, Config, random_weights
from peftbench.recommend import PRIORITIES, Limits, from_measurements, noise, task_type
from peftbench.report.configs import fmt, model_title, scale_name, slug
from peftbench.report.scores import Comparison

UNITS = {"performance": "score", "memory": "lowest peak memory", "time": "shortest run",
         "inference": "fastest inference"}


@dataclass
class Pick:
    priority: str
    config: Config
    why: list[str]


@dataclass
class Block:
    model: str
    task: str
    scale: object
    n_train: int
    trained: list[Config]
    baselines: list[Config]
    picks: list[Pick] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    general: dict[str, str] = field(default_factory=dict)  # kinds of noise its cells refer to

    @property
    def key(self) -> str:
        return f"{slug(self.model)}-{slug(self.task)}-{slug(scale_name(self.scale))}"

    @property
    def title(self) -> str:
        seeds = sorted({c.seeds for c in self.trained})
        return (f"{model_title(self.model)} · {self.task} · {scale_name(self.scale)} ({self.n_train:,} training"
                f" examples; {'/'.join(map(str, seeds))} seed{'s' if seeds != [1] else ''})")


def evidence(config: Config) -> dict[str, str]:
    """The numbers behind a pick, as shown: score with its 95% interval, peak memory, seconds, dollars."""
    score = config.score()
    memory = config.summary(lambda run: run.get("peak_memory_bytes"))
    seconds = config.summary(lambda run: run.get("wall_s"))
    cost = config.summary(lambda run: run.get("cost_usd"))
    infer = config.summary(lambda run: run.get("infer_tokens_per_s"))
    if score is None:
        score_text = "–"
    elif score.low is None:
        score_text = f"{fmt(score.mean)} (one seed)"
    else:
        score_text = f"{fmt(score.mean)} ({fmt(score.low)}–{fmt(score.high)})"
    return {"score": score_text,
            "memory": "–" if memory is None else f"{memory.mean / 1e9:.2f} GB",
            "time": "–" if seconds is None else f"{seconds.mean:,.0f} s",
            "inference": "–" if infer is None else f"{infer.mean:,.0f} tok/s",
            "cost": "no price" if cost is None else f"${cost.mean:.4f}"}


GENERAL_NOTES = {
    "within_spread": "A lead marked \"within the seeds' spread\" is smaller than the standard deviation between"
                     " seeds of the two methods: treat them as tied, and choose between them on another priority.",
    "one_seed": "One seed per configuration: no difference between methods can be told from seed noise; run more"
                " seeds (--seed 0 --seed 1 --seed 2) before deciding on small differences.",
    "cpu_memory": "Peak memory on CPU is the process's peak resident set, which includes Python and torch"
                  " themselves and moves between runs of one method by tenths of a GB: only differences well beyond"
                  " that spread say anything about the methods. Measure memory on a GPU (CUDA max_memory_allocated)"
                  " or with `peftbench profile`, which isolates training's own memory.",
}
LEADS = {"performance": ("best mean score", lambda c: fmt(c.score().mean) if c.score() else "–"),
         "memory": ("lowest mean peak memory", lambda c: evidence(c)["memory"]),
         "time": ("shortest mean run", lambda c: evidence(c)["time"]),
         "inference": ("fastest mean inference", lambda c: evidence(c)["inference"])}


def _comparison_text(comparison: Comparison | None) -> str | None:
    """The performance pick against the runner-up, as the paired bootstrap judged it."""
    if comparison is None:
        return None
    if comparison.paired is None:
        return f"no paired test ({comparison.reason})"
    paired = comparison.paired
    return f"{comparison.verdict} (paired bootstrap over {paired.n_rows} test rows, p = {paired.p_value:.3f})"


def _against_baseline(pick: Config) -> str | None:
    """The pick against the best baseline, as peftbench.learning judged it; for random weights only the numbers
    (the block's note says why they get no verdict)."""
    learning = pick.learning
    return (learning.evidence or None) if pick.random_weights else learning.reason


def _why(priority: str, ranked: list[Config], tie: str | None, comparison: Comparison | None,
         noise_short: list[str]) -> list[str]:
    """Why this method under this priority: what it leads on and by how much, and how far to trust that."""
    what, shown = LEADS[priority]
    why = [what + (f"; next: {ranked[1].label} at {shown(ranked[1])}" if len(ranked) > 1 else "")]
    why += [tie] if tie else []
    if priority == "performance":
        why += [text for text in (_against_baseline(ranked[0]), _comparison_text(comparison)) if text]
    return why + noise_short


def blocks(items: list[Config], comparisons: list[Comparison]) -> list[Block]:
    """One block per model, task and data size that trained something, sorted by those."""
    found: dict[tuple, Block] = {}
    for config in items:
        key = (config.model, config.task, config.n_train)
        block = found.setdefault(key, Block(config.model, config.task, config.scale, config.n_train, [], []))
        (block.trained if config.kind == "train" else block.baselines).append(config)
    result = []
    for (model, task, n_train), block in sorted(found.items(), key=lambda item: (str(item[0][0]), str(item[0][1]),
                                                                                  item[0][2])):
        if not block.trained:
            continue
        kind = task_type(block.trained[0].runs[0])
        notes: list[str] = []
        for priority in PRIORITIES:
            answer = from_measurements(block.baselines + block.trained, kind, n_train, n_train, priority, Limits())
            long_noise = set()  # said in short in the pick's cell, and once for the summary (GENERAL_NOTES)
            if answer.ranking:
                by_label = {c.label: c for c in block.trained}
                ranked = [by_label[choice.method] for choice in answer.ranking]
                tie = next((r for r in answer.ranking[0].reasons if r.startswith("ties with")), None)
                comparison = next((c for c in comparisons if (c.model, c.task, c.scale) == (model, task, block.scale)
                                   and c.first.label == ranked[0].label), None)
                found_noise = noise({(model, task, n_train): ranked}, [c.label for c in ranked], priority)
                block.general.update({n.kind: GENERAL_NOTES[n.kind] for n in found_noise})
                block.picks.append(Pick(priority, ranked[0], _why(priority, ranked, tie, comparison,
                                                                  [n.short for n in found_noise])))
                long_noise = {n.long for n in found_noise}
            excluded = [f"Not recommended under any priority: {item['method']}, which {item['reason']}."
                        for item in answer.excluded]
            notes += [note for note in excluded + answer.notes[1:] if note not in long_noise and note not in notes]
        if random_weights(model):
            notes = [f"{model}: {RANDOM_WEIGHTS}"] + [note for note in notes if "random weights" not in note]
        block.notes = notes
        result.append(block)
    return result


def general_notes(summary: list[Block]) -> list[str]:
    """The explanations the blocks' cells refer to, once for the whole summary."""
    kinds = dict.fromkeys(kind for block in summary for kind in block.general)
    return [GENERAL_NOTES[kind] for kind in kinds]


def block_rows(block: Block) -> list[list[str]]:
    """The block's table: priority, method, its evidence, and why."""
    lines = []
    for pick in block.picks:
        shown = evidence(pick.config)
        lines.append([pick.priority, pick.config.label, shown["score"], shown["memory"], shown["time"],
                      shown["inference"], shown["cost"], "; ".join(pick.why)])
    return lines


COLUMNS = ["priority", "recommended", "score (95% interval)", "peak memory", "time per run", "inference",
           "cost per run", "why"]
