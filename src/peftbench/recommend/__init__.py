"""`peftbench recommend`: rank methods for a task type and training-set size. Evidence first: when the
store holds finished runs of the same task type at a nearby data size, methods are ranked by what was
measured there, under the hard limits. Otherwise the ranking comes from the papers' findings (priors),
each citing where it was found."""

import math

from peftbench.recommend.answer import PRIORITIES, Choice, Limits, Recommendation, data_scale, task_type
from peftbench.recommend.measured import from_measurements, noise
from peftbench.recommend.priors import from_priors

__all__ = ["PRIORITIES", "Choice", "Limits", "Recommendation", "data_scale", "from_measurements", "from_priors",
           "noise", "recommend", "task_type"]

NEARBY_FACTOR = 3  # evidence counts when its training size is within this factor of the asked one


def recommend(rows: list[dict], kind: str, n: int, priority: str, limits: Limits) -> Recommendation:
    measured = [row for row in rows if row.get("kind") in ("train", "baseline") and task_type(row) == kind
                and row.get("status") == "finished"]
    sizes = {row["n_train"] for row in measured if row["kind"] == "train"}
    near = [size for size in sizes if max(size, n) / max(min(size, n), 1) <= NEARBY_FACTOR]
    if near:
        chosen = min(near, key=lambda size: abs(math.log(size / n)))
        return from_measurements([row for row in measured if row["n_train"] == chosen], kind, n, chosen,
                                 priority, limits)
    recommendation = from_priors(kind, n, priority, limits)
    recommendation.notes.insert(0, f"The store has no finished {kind} runs within a factor {NEARBY_FACTOR} of"
                                   f" {n} training examples" + (f" (it has sizes {sorted(sizes)})" if sizes else "")
                                   + ", so this ranking comes from the papers, not from measurements.")
    return recommendation
