"""A tuning study read back from stored rows: its trials (the runs on the study's trial seed, numbered from 0), how
each ended, the best one on the validation split, and the two configurations the report and `recommend` compare:
the defaults (trial 0) and the tuned setting (the best trial), each with its runs on the other seeds.

A trial's spec carries `tune`: {"study": the study's id, "trial": its number, "trial_seed", "method_spec": the
suite's spec the study tunes, "params": what the sampler chose, "select_by", "sampler", "pruner", "space"}. Its
other seeds are the same spec at another seed, so they group with it into one configuration
(peftbench.identity.configuration_key). Plain data: no model code and no Optuna here."""

import math
from dataclasses import dataclass, field


TUNE_KEY = "tune"
ENDED = ("finished", "failed")  # a trial that ended either way keeps its place in the study; it is never retried


def tune_part(row: dict) -> dict | None:
    return row.get(TUNE_KEY) or None


def is_trial(spec: dict) -> bool:
    """A study's trial (on its trial seed), not one of its configurations' runs on the other seeds."""
    part = tune_part(spec)
    return part is not None and spec.get("seed") == part["trial_seed"]


@dataclass(frozen=True)
class HistoryTrial:
    """An ended trial as the sampler and the pruner see it: `state` complete | pruned | failed, `value` the
    objective of a complete trial (higher is better), `steps` (epoch, value) after each epoch."""

    number: int
    params: dict
    state: str
    value: float | None
    steps: tuple[tuple[int, float], ...]


# A validation score ties often (early epochs of a small validation set all at the majority rate): the validation
# loss breaks the tie, at a weight so small that it never outweighs one validation row (1 / 10,000) of the score.
TIE_BREAK = 1e-6


def objective(select_by: str, score: float | None, loss: float | None) -> float | None:
    """What a study maximises: the validation score (ties broken by the lower validation loss), or minus the
    validation loss; None when it is not known or not finite."""
    if loss is None or not math.isfinite(loss) or select_by == "val_score" and (score is None or not math.isfinite(score)):
        return None
    return score - TIE_BREAK * loss if select_by == "val_score" else -loss


def objective_steps(row: dict, select_by: str) -> tuple[tuple[int, float], ...]:
    """The objective after each epoch, as the pruner saw it."""
    steps = [(point["epoch"], objective(select_by, point.get("val_score"), point["val_loss"]))
             for point in row.get("curve") or []]
    return tuple((epoch, value) for epoch, value in steps if value is not None)


@dataclass(frozen=True)
class TrialContext:
    """What a trial's run carries to wherever it executes, so that its pruner decides there as it would here:
    the study's settings (its runs' `tune` part) and the trials that ended before the trial was asked."""

    settings: dict
    history: tuple[HistoryTrial, ...]

    @property
    def select_by(self) -> str:
        return self.settings["select_by"]


@dataclass
class Trial:
    number: int
    row: dict

    @property
    def params(self) -> dict:
        return self.row[TUNE_KEY]["params"]

    @property
    def ended(self) -> bool:
        return self.row["status"] in ENDED

    @property
    def state(self) -> str:
        """complete | pruned | failed, or the row's status while it has not ended (running, interrupted)."""
        if self.row["status"] == "failed":
            return "failed"
        if self.row["status"] != "finished":
            return self.row["status"]
        return "pruned" if self.row.get("stopped_by") == "pruned" else "complete"

    def value(self, select_by: str) -> float | None:
        """The objective of a complete trial: that of the weights it keeps (its best epoch's)."""
        if self.state != "complete":
            return None
        return objective(select_by, self.row.get("val_score"), self.row.get("best_val_loss"))

    def shown(self, select_by: str) -> float | None:
        """What the study judged the trial by, as the metric reads: a complete trial's validation score (or
        loss) at the weights it keeps, a pruned one's at the epoch it was stopped."""
        if self.state == "complete":
            return self.row.get("val_score" if select_by == "val_score" else "best_val_loss")
        curve = self.row.get("curve") or []
        return curve[-1].get(select_by) if curve else None

    def history(self, select_by: str) -> HistoryTrial:
        return HistoryTrial(self.number, dict(self.params), self.state, self.value(select_by),
                            objective_steps(self.row, select_by))


@dataclass
class Study:
    """One method's study on one model x task x data size, from the rows that carry its id."""

    id: str
    settings: dict  # the tune part of its first row, less what differs per trial
    trials: dict[int, Trial] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)  # every row of the study: trials and their other seeds

    @property
    def select_by(self) -> str:
        return self.settings["select_by"]

    @property
    def method_spec(self) -> str:
        return self.settings["method_spec"]

    @property
    def first(self) -> dict:
        return self.rows[0]

    def ended(self) -> list[Trial]:
        return [trial for number, trial in sorted(self.trials.items()) if trial.ended]

    def best(self) -> Trial | None:
        """The complete trial with the highest objective; ties go to the earlier trial (the defaults first)."""
        scored = [(trial.value(self.select_by), -trial.number, trial) for trial in self.ended()
                  if trial.value(self.select_by) is not None]
        return max(scored, key=lambda item: item[:2])[2] if scored else None

    def default(self) -> Trial | None:
        return self.trials.get(0)

    def runs_of(self, trial: Trial) -> list[dict]:
        """A trial's configuration: the trial and the same spec on the other seeds."""
        return [row for row in self.rows if row[TUNE_KEY]["trial"] == trial.number]

    def counts(self) -> dict[str, int]:
        states = [trial.state for trial in self.trials.values()]
        return {state: states.count(state) for state in ("complete", "pruned", "failed") if state in states}


def studies(rows: list[dict]) -> list[Study]:
    """Every study with rows among `rows`, in the order of their first row."""
    found: dict[str, Study] = {}
    for row in rows:
        part = tune_part(row)
        if part is None:
            continue
        study = found.setdefault(part["study"], Study(part["study"], {k: v for k, v in part.items()
                                                                      if k not in ("trial", "params")}))
        study.rows.append(row)
        if is_trial(row):
            study.trials[part["trial"]] = Trial(part["trial"], row)
    return list(found.values())


def roles(rows: list[dict]) -> dict[str, str]:
    """run id -> `default` or `tuned` (or `default = tuned` when the defaults won) for the runs of each study's two
    configurations; the other trials have no role: they were searched, not chosen."""
    found = {}
    for study in studies(rows):
        best, default = study.best(), study.default()
        for trial, role in ((default, "default"), (best, "tuned")):
            if trial is None:
                continue
            both = best is not None and default is not None and best.number == default.number
            for row in study.runs_of(trial):
                found[row["run_id"]] = "default = tuned" if both else role
    return found


def final_rows(rows: list[dict]) -> list[dict]:
    """The rows a report aggregates: rows of no study as they are, and of each study only its two
    configurations (the defaults and the best trial, over their seeds)."""
    chosen = roles(rows)
    return [row for row in rows if tune_part(row) is None or row["run_id"] in chosen]
