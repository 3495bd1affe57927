"""Tasks declared as data: where the rows come from, how a row becomes a prompt and a target, how it is scored."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Row = dict[str, object]


@dataclass(frozen=True)
class TaskData:
    """The raw rows of a task. `test` is None when the source has no labelled test split of its own;
    the splitter then draws the test set from `train`."""

    train: list[Row]
    test: list[Row] | None = None


@dataclass(frozen=True)
class TaskSpec:
    """One task. `template` is a `str.format` string over a row's fields giving the model input;
    `target_field` names the field holding the answer. For classification `label_map` maps raw label
    values (ints from hub datasets, strings from files) to the label words a text-to-text model emits,
    in a fixed order that is also the class index order of a classification head."""

    name: str
    kind: Literal["classification", "generation"]
    load: Callable[[], TaskData]
    template: str
    target_field: str
    primary_metric: str
    source: str
    description: str
    label_map: dict[object, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what planning found in the data that the user should read (a file task's overlap)

    @property
    def labels(self) -> list[str]:
        return list(dict.fromkeys(self.label_map.values()))

    def prompt(self, row: Row) -> str:
        return self.template.format(**row)

    def target(self, row: Row) -> str:
        raw = row[self.target_field]
        if self.kind == "classification":
            return self.label_map[raw]
        return str(raw)
