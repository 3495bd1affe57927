"""`peftbench recommend`: rank methods for a task type and training-set size. Evidence first: when the
store holds finished runs of the same task type at a nearby data size (of the task, model, scale and suite
asked, if any), methods are ranked by what was measured there, like with like, under the hard limits, never
one that did not learn. Otherwise the ranking comes from the papers' findings (priors), each citing where it
was found."""

import math

from peftbench.configurations import configs
from peftbench.errors import UserError
from peftbench.recommend.answer import (PRIORITIES, Choice, Limits, Recommendation, Scope, data_scale,
                                        task_type)
from peftbench.recommend.measured import from_measurements, noise
from peftbench.recommend.priors import from_priors

__all__ = ["PRIORITIES", "Choice", "Limits", "Recommendation", "Scope", "data_scale", "from_measurements",
           "from_priors", "noise", "recommend", "task_type"]

NEARBY_FACTOR = 3  # evidence counts when its training size is within this factor of the asked one


def recommend(rows: list[dict], kind: str | None, n: int | None, priority: str, limits: Limits,
              scope: Scope = Scope()) -> Recommendation:
    """`kind` and `n` (task type, training examples) may be left to the runs `scope` chooses when they agree
    on one; a scope that matches no run, or a task type it contradicts, is a UserError."""
    finished = [row for row in rows if row.get("kind") in ("train", "baseline") and row.get("status") == "finished"]
    chosen = scope.choose(finished)
    trained = [row for row in chosen if row["kind"] == "train"]
    kind = kind or _only("--task-type", {task_type(row) for row in trained}, scope)
    if scope.task and trained and task_type(trained[0]) != kind:
        raise UserError(f"--task {scope.task} is a {task_type(trained[0])} task, not {kind}: drop --task-type or"
                        f" ask --task-type {task_type(trained[0])}")
    measured = [row for row in chosen if task_type(row) == kind]
    sizes = {row["n_train"] for row in measured if row["kind"] == "train"}
    n = n or _only("--train-samples", sizes, scope)
    near = [size for size in sizes if max(size, n) / max(min(size, n), 1) <= NEARBY_FACTOR]
    if near:
        size = min(near, key=lambda size: abs(math.log(size / n)))
        recommendation = from_measurements(configs([row for row in measured if row["n_train"] == size]), kind, n,
                                           size, priority, limits)
    else:
        recommendation = from_priors(kind, n, priority, limits)
        recommendation.notes.insert(0, f"The store has no finished {kind} runs{scope.of()} within a factor"
                                       f" {NEARBY_FACTOR} of {n} training examples"
                                       + (f" (it has sizes {sorted(sizes)})" if sizes else "")
                                       + ", so this ranking comes from the papers, not from measurements.")
    recommendation.scope = scope.flags()
    return recommendation


def _only(flag: str, values: set, scope: Scope):
    """The one value the chosen runs agree on, for a flag left out."""
    if len(values) != 1:
        found = f"the runs{scope.of()} have {', '.join(map(str, sorted(values)))}" if values else \
            f"there are no finished training runs{scope.of()} to take it from"
        raise UserError(f"{flag} is needed: {found}")
    return next(iter(values))
