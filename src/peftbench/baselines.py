"""Baselines: what a trained method has to beat, planned, run and stored through the same grid as the methods.
Each declares where it applies and how it scores, so the planner, the executor and the report never ask
which baseline a run is. They share the methods' vocabulary (`trains`, `uses_model`, `is_reference`).

- `majority`: every test row answered with the most frequent label of the run's training rows (Hamilton &
  Mueller's "all-yes" on BoolQ, Table 1). Classification only: free text has no majority answer.
- `zero_shot`: the untrained model evaluated as it is, by the same evaluation as a trained run (Hamilton &
  Mueller's untrained OPT, Table 1). Not for encoders: their classification head is untrained, so its score
  is chance, not the model's zero-shot ability."""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from peftbench.evaluate import classification_metrics
from peftbench.models import Family
from peftbench.registry import Registry
from peftbench.tasks import Row, TaskSpec


@dataclass(frozen=True)
class Baseline:
    """`applies(task kind, model family)`: whether the baseline means something there (the planner leaves it
    out elsewhere). `score_without_model(task, training rows, test rows)`: the test metrics of a baseline that
    needs no model; None: the untrained model is evaluated as it is."""

    name: str
    summary: str
    applies: Callable[[str, Family], bool]
    score_without_model: Callable[[TaskSpec, list[Row], list[Row]], dict] | None = None
    trains = False  # a baseline is evaluated, never trained
    is_reference = False  # the yardstick of relative measurements is a trained method (full tuning)

    @property
    def uses_model(self) -> bool:
        """Whether the run loads the model (and so costs its evaluation, and says nothing on random weights)."""
        return self.score_without_model is None


def _majority(task: TaskSpec, train: list[Row], test: list[Row]) -> dict:
    majority = Counter(task.target(row) for row in train).most_common(1)[0][0]
    golds = [task.target(row) for row in test]
    return {**classification_metrics(golds, [majority] * len(golds), task.labels), "majority_label": majority}


BASELINES: Registry[Baseline] = Registry("baseline", "peftbench methods")
for baseline in (
    Baseline("majority", "the most frequent training label for every test row",
             applies=lambda kind, family: kind == "classification", score_without_model=_majority),
    Baseline("zero_shot", "the untrained model, evaluated as it is",
             applies=lambda kind, family: family != "encoder"),
):
    BASELINES.register(baseline.name, baseline)
