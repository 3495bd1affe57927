"""What a stored run records about itself besides its measurements: the facts the report and `recommend`
read from each row (peftbench.recording writes them), so that neither has to rebuild a model or look a method
up to learn them. Plain data, importing nothing of peftbench, so the report can read it."""

import json
from dataclasses import asdict, dataclass, fields

# A generated answer that names no label: Hamilton & Mueller's "other". Bracketed so that it can never
# collide with a real label word (fine-food's labels are "great" and "other"). Stored as a key of a run's
# metrics.prediction_counts.
OTHER = "<other>"


@dataclass(frozen=True)
class RunFacts:
    """A run's facts, stored flat beside its measurements in the row's result (their keys are these names).
    Counts follow peftbench.accounting: `total_params` and `trainable_params` as the run's model had them
    (with an encoder's classification head); `added_params` (new tensors) and `changed_params` (base
    entries that differ after merging) on the architecture without a head, as `peftbench params` counts them.
    None: not known (a baseline trains nothing; a count that could not be made)."""

    family: str | None  # the model's architecture: encoder | decoder | seq2seq
    trains: bool  # a method's run; False for a baseline
    is_reference: bool  # its method is the yardstick of relative measurements (full tuning)
    total_params: int | None = None
    trainable_params: int | None = None
    added_params: int | None = None
    changed_params: int | None = None

    def as_fields(self) -> dict:
        return asdict(self)

    @classmethod
    def of_row(cls, row: dict) -> "RunFacts | None":
        """The facts a row holds, or None when it was stored without them (peftbench.recording completes it)."""
        if any(field.name not in row for field in fields(cls)):
            return None
        return cls(**{field.name: row[field.name] for field in fields(cls)})


FACT_KEYS = tuple(field.name for field in fields(RunFacts))


# The row every reader relies on, as every store has held it since the first (docs/results/offline.db, schema
# version 1): its kind and status, and the spec keys with their JSON types (a float may be written as an integer;
# a boolean is never a number). The store's reader names and skips a row of another shape (another version's
# layout, a hand edit) instead of letting a report or a ranking fail on it half-way (peftbench.store).
KINDS = ("train", "baseline")
STATUSES = ("running", "finished", "failed", "interrupted")
NUMBER = (int, float)
SPEC_SHAPE: dict[str, tuple[type, ...]] = {
    "model": (str,), "task": (str,), "task_source": (str,), "method": (str,), "method_spec": (str,),
    "method_options": (dict,), "scale": (str, int), "n_train": (int,), "seed": (int,), "split_seed": (int,),
    "val_cap": (int,), "test_cap": (int,), "max_input_length": (int,), "max_target_length": (int,), "eval": (str,),
    "group_by_length": (bool,)}
TRAIN_SPEC_SHAPE: dict[str, tuple[type, ...]] = {
    "epochs": (int,), "batch_size": (int,), "grad_accum": (int,), "patience": (int,), "peak_factor": NUMBER,
    "final_factor": NUMBER, "warmup_ratio": NUMBER, "weight_decay": NUMBER, "max_grad_norm": (*NUMBER, type(None)),
    "max_minutes": (*NUMBER, type(None))}


def shape_problem(kind: object, status: object, spec: object, result: object) -> str | None:
    """What makes a stored row unreadable (the first thing found), or None for a row of the shape above."""
    if kind not in KINDS or status not in STATUSES:
        return f"kind {kind!r} and status {status!r} are not among {', '.join(KINDS)} and {', '.join(STATUSES)}"
    if not isinstance(spec, dict) or not isinstance(result, dict):
        return "its spec and result are not JSON objects"
    shape = SPEC_SHAPE | (TRAIN_SPEC_SHAPE if kind == "train" else {})
    for key, types in shape.items():
        if key not in spec:
            return f"its spec has no '{key}'"
        if type(spec[key]) not in types:  # exact: True is no seed
            return f"its spec's '{key}' is {json.dumps(spec[key])[:40]}, not {' or '.join(t.__name__ for t in types)}"
    return None
