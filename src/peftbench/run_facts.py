"""What a stored run records about itself besides its measurements: the facts the report and `recommend`
read from each row (peftbench.recording writes them), so that neither has to rebuild a model or look a method
up to learn them. Plain data, importing nothing of peftbench, so the report can read it."""

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
