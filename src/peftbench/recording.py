"""Recording a run's facts (peftbench.run_facts.RunFacts) in its row: when the run ends, from the run itself, and,
for rows stored before runs recorded them (the committed docs/results/offline.db among them), derived once as
the store is read for the report or `recommend` (`read_results`), as the report used to derive them itself."""

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from peftbench.run_facts import RunFacts
from peftbench.store import read_rows

if TYPE_CHECKING:
    from peftbench.planning import Run

# accounting, methods and models (torch, transformers, PEFT) are imported where a fact has to be made, so that
# reading a store whose rows all hold their facts (a report, recommend) loads none of them.


def facts_of_run(run: "Run", result: dict) -> dict:
    """The facts of a run that has just ended with `result`, as the row's fields."""
    from peftbench.accounting import count

    procedure, spec = run.procedure, run.spec
    added = changed = None
    if procedure.trains:  # counted on the meta device, after the run, so nothing of it can move the run's RNG
        counted = count(spec["model"], spec["method_spec"], spec["seed"])
        added, changed = counted.added, counted.changed
    return RunFacts(family=result.get("family"), trains=procedure.trains, is_reference=procedure.is_reference,
                    total_params=result.get("total_params"), trainable_params=result.get("trainable_params"),
                    added_params=added, changed_params=changed).as_fields()


@functools.cache
def _family(model: str) -> str | None:
    from peftbench.models import model_family

    try:
        return model_family(model)
    except Exception:  # an old row's model that cannot be read here (offline, uncached hub model): not known
        return None


@functools.cache
def _added_and_changed(model: str, method_spec: str, seed: int) -> tuple[int | None, int | None]:
    from peftbench.accounting import count

    try:
        counted = count(model, method_spec, seed)
    except Exception:  # as _family; or a method spec this version no longer takes
        return None, None
    return counted.added, counted.changed


def complete(rows: list[dict]) -> list[dict]:
    """The rows, each finished one stored without its facts given them: the family that another row of its
    model recorded (or its config says), whether it trains and is the reference (its method's declaration),
    and its added and changed counts from `peftbench params`' accounting. Rows with their facts are kept."""
    if all(row.get("status") != "finished" or RunFacts.of_row(row) is not None for row in rows):
        return rows
    from peftbench.methods import METHODS

    families = {row["model"]: row["family"] for row in rows if row.get("family")}
    completed = []
    for row in rows:
        if row.get("status") != "finished" or RunFacts.of_row(row) is not None:
            completed.append(row)
            continue
        trains = row["kind"] == "train"
        method = METHODS.get(row["method"]) if trains and row["method"] in METHODS else None
        added, changed = _added_and_changed(row["model"], row["method_spec"], row["seed"]) if method else (None, None)
        facts = RunFacts(family=row.get("family") or families.get(row["model"]) or _family(row["model"]),
                         trains=trains, is_reference=bool(method and method.is_reference),
                         total_params=row.get("total_params"), trainable_params=row.get("trainable_params"),
                         added_params=row.get("added_params", added), changed_params=row.get("changed_params", changed))
        completed.append({**row, **facts.as_fields()})
    return completed


def read_results(path: Path, kind: str | None = None) -> list[dict]:
    """A store's rows (store.read_rows) with every finished row's facts: what the report and recommend read."""
    return complete(read_rows(path, kind))
