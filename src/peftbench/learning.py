"""Did a trained configuration learn anything? Hamilton & Mueller's check, made a verdict: its score must be
significantly above the best baseline (majority answer or zero-shot model) of its model, task and data size,
by a paired bootstrap over the test rows both were scored on (peftbench.stats, as the report compares its top
two). A configuration that did not learn is marked wherever it is shown (`run`, `results`, the report) and is
never recommended (`recommend`, the report's summary), with this verdict's reason.

Where the test cannot be made it is `not checked`, with why, and neither passes nor fails (except that a score
not above the baseline's at all did not learn, whatever an interval would say; random weights excepted):
- no baseline was run on the model, task and data size, or none was scored on the same test rows;
- the runs were stored without per-row test results (before they were recorded);
- the task's metric is not the mean of the per-row results (MCC, F1: per row only correctness is stored, and a
  configuration can raise MCC above the majority answer's 0 without beating its accuracy);
- the model has random weights (`config:`): its scores exercise the pipeline and say nothing about the
  methods, so, as for the report's comparison of the top two, no significance is claimed for it. Such models
  are tiny pipeline checks (tests, trying a suite) that mostly answer at chance: a verdict would mark nearly
  every method as not learned and leave their rankings empty, which says nothing that their title does not."""

from dataclasses import dataclass

from peftbench.stats import Paired, paired_bootstrap

LEARNED, DID_NOT_LEARN, NOT_CHECKED = "learned", "did_not_learn", "not_checked"
# The primary metrics that are the mean of the per-row results a run stores (evaluate.py: 0/1 correct for
# classification, ROUGE-L for generation), so that resampling the rows resamples the metric itself.
PER_ROW_METRICS = ("accuracy", "rougeL")
RANDOM_WEIGHTS_REASON = "random-weight model: its scores say nothing about the methods, so no significance is claimed"


@dataclass(frozen=True)
class Learning:
    """A trained configuration's verdict against the best baseline; its `reason` is the sentence shown, e.g.
    "did not learn: 0.650 vs majority 0.650, difference +0.000 [-0.020, +0.020] over 500 test rows"."""

    verdict: str  # learned | did_not_learn | not_checked
    evidence: str = ""  # the scores and the difference, as far as they are known
    why: str = ""  # why it was not checked
    baseline: str | None = None  # the best baseline's label
    baseline_score: float | None = None  # its mean score
    paired: Paired | None = None  # this configuration minus that baseline, over their shared test rows

    @property
    def excluded(self) -> bool:
        """Never recommended: it did not learn."""
        return self.verdict == DID_NOT_LEARN

    @property
    def headline(self) -> str:
        return {LEARNED: "learned", DID_NOT_LEARN: "did not learn", NOT_CHECKED: f"not checked ({self.why})"}[
            self.verdict]

    @property
    def reason(self) -> str:
        return f"{self.headline}: {self.evidence}" if self.evidence else self.headline

    @property
    def mark(self) -> str:
        """The short form for a table's cell."""
        return {LEARNED: "yes", DID_NOT_LEARN: "NO", NOT_CHECKED: "unchecked"}[self.verdict]

    def as_dict(self) -> dict:
        paired = self.paired
        return {"verdict": self.verdict, "reason": self.reason, "baseline": self.baseline,
                "baseline_score": self.baseline_score, "difference": paired and paired.difference, "low": paired and paired.low,
                "high": paired and paired.high, "test_rows": paired and paired.n_rows}


def judge(config) -> Learning:
    """The verdict on a trained peftbench.configurations.Config: its mean per-row result against that of the
    best-scoring of its baselines tested on the same rows; learned only if the 95% interval of the difference
    lies above 0. Without per-row results a score at or below the baseline's still did not learn: no interval
    is needed to see that it is not above."""
    score = config.score()
    same_rows = [b for b in config.baselines if b.test_digest == config.test_digest and b.score()]
    best = max(same_rows, key=lambda b: b.score().mean, default=None)
    against = best and f"{_fmt(score and score.mean)} vs {best.label} {_fmt(best.score().mean)}"
    if config.random_weights:
        return _unchecked(RANDOM_WEIGHTS_REASON, best, against)
    if best is None:
        return _unchecked("no baseline was scored on its test rows" if config.baselines else
                          "no baseline was run on this model, task and data size")
    ours, theirs = config.per_row(), best.per_row()
    if config.metric not in PER_ROW_METRICS:
        why = f"its metric, {config.metric}, is not a mean over test rows"
    elif ours is None or theirs is None or len(ours) != len(theirs):
        why = "runs stored without per-row test results"
    else:
        paired = paired_bootstrap(ours, theirs)
        return Learning(LEARNED if paired.low > 0 else DID_NOT_LEARN,
                        f"{against}, difference {paired.difference:+.3f} [{paired.low:+.3f}, {paired.high:+.3f}]"
                        f" over {paired.n_rows} test rows", baseline=best.label, baseline_score=best.score().mean,
                        paired=paired)
    if score is not None and score.mean <= best.score().mean:
        return Learning(DID_NOT_LEARN, f"{against}, not above it, so no interval is needed",
                        baseline=best.label, baseline_score=best.score().mean)
    return _unchecked(why, best, against)


def _unchecked(why: str, best=None, against: str | None = None) -> Learning:
    return Learning(NOT_CHECKED, against or "", why, best and best.label, best and best.score().mean)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"
