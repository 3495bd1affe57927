"""What tuning shows, per model x task x scale and method: the study's trials and how they ended, the best
trial's hyper-parameters, the score at the defaults and at the tuned setting (each over its seeds), and the
compute the study spent against what the defaults alone cost (what `peftbench run` trains for the method).
`peftbench tune` prints it and `--json` gives it; the report's tuned-vs-default table is built from it."""

from dataclasses import asdict, dataclass

from peftbench.stats import METRIC_RANGES, Summary, summarise
from peftbench.tuning.studies import Study, Trial, studies


@dataclass
class Scored:
    """A configuration of a study: its trial, the hyper-parameters, its test score over seeds and its runs."""

    trial: int
    params: dict
    score: Summary | None
    runs: list[str]  # run ids, the trial's first


@dataclass
class StudySummary:
    model: str
    task: str
    scale: object
    n_train: int
    method: str  # the method spec the suite wrote, tuned
    study: str
    select_by: str
    metric: str | None
    trials: dict[str, int]  # complete, pruned, failed (and running or interrupted ones not yet ended)
    default: Scored | None
    tuned: Scored | None
    validation: list[dict]  # per trial: number, params, state, the validation value it was chosen by, epochs
    seconds: float  # wall time of every run of the study
    default_seconds: float  # of the defaults' runs alone: what an untuned grid spends on the method here
    epochs: int  # epochs trained by every trial

    @property
    def cost_ratio(self) -> float | None:
        return self.seconds / self.default_seconds if self.default_seconds else None

    def as_dict(self) -> dict:
        return {**asdict(self), "cost_ratio": self.cost_ratio}


def _scored(study: Study, trial: Trial | None) -> Scored | None:
    if trial is None:
        return None
    runs = [row for row in study.runs_of(trial) if row["status"] == "finished"]
    runs.sort(key=lambda row: row["seed"] != study.settings["trial_seed"])
    metric = study.first.get("primary_metric")
    score = summarise([row.get("score") for row in runs], METRIC_RANGES.get(metric))
    return Scored(trial.number, trial.params, score, [row["run_id"] for row in runs])


def summaries(rows: list[dict]) -> list[StudySummary]:
    """One summary per study in `rows`, sorted by model, task, training size and method spec."""
    found = []
    for study in studies(rows):
        first = study.first
        metric = next((row.get("primary_metric") for row in study.rows if row.get("primary_metric")), None)
        default = study.default()
        validation = [{"trial": trial.number, "params": trial.params, "state": trial.state,
                       "value": trial.shown(study.select_by),
                       "epochs": len(trial.row.get("curve") or [])} for _, trial in sorted(study.trials.items())]
        found.append(StudySummary(
            first["model"], first["task"], first["scale"], first["n_train"], study.method_spec, study.id,
            study.select_by, metric, study.counts(), _scored(study, default), _scored(study, study.best()),
            validation, sum(row.get("wall_s") or 0.0 for row in study.rows),
            sum(row.get("wall_s") or 0.0 for row in (study.runs_of(default) if default else [])),
            sum(entry["epochs"] for entry in validation)))
    found.sort(key=lambda s: (s.model, s.task, s.n_train, s.method))
    return found
