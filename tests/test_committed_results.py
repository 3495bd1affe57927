"""The committed results store (docs/results/offline.db, rows of schema_version 1 without recorded facts)
still renders the committed tables byte for byte, its facts derived once as it is read."""

import shutil
from pathlib import Path

import pytest

from peftbench import report
from peftbench.accounting import count
from peftbench.recording import complete, read_results
from peftbench.report import render
from peftbench.run_facts import FACT_KEYS, RunFacts
from peftbench.store import read_rows

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


@pytest.fixture(scope="module")
def pu_rows(tmp_path_factory):
    store = tmp_path_factory.mktemp("committed") / "offline.db"
    shutil.copy(RESULTS / "offline.db", store)
    return [row for row in read_results(store) if row["suite"] == "pu2023-offline"]


def test_old_rows_get_their_facts_from_their_model_and_method(pu_rows):
    assert not any(key in row for row in read_rows(RESULTS / "offline.db") for key in ("is_reference", "added_params"))
    facts = {row["run_id"]: RunFacts.of_row(row) for row in pu_rows if row["status"] == "finished"}
    assert facts and all(fact is not None for fact in facts.values())
    assert {fact.family for fact in facts.values()} == {"encoder"}  # baselines too: from their model's other rows
    by_id = {row["run_id"]: row for row in pu_rows}
    assert {by_id[i]["method"] for i, fact in facts.items() if fact.is_reference} == {"full"}
    assert {by_id[i]["kind"] for i, fact in facts.items() if not fact.trains} == {"baseline"}
    lora = next(row for row in pu_rows if row["method"] == "lora_scaling")
    counted = count(lora["model"], lora["method_spec"], lora["seed"])
    assert (lora["added_params"], lora["changed_params"]) == (counted.added, counted.changed) and counted.added > 0
    assert complete(pu_rows) == pu_rows  # rows that hold their facts are kept as they are
    assert set(FACT_KEYS) <= set(lora)


def test_the_committed_tables_render_byte_for_byte(pu_rows):
    built = report.build(pu_rows, "peftbench report: pu2023-offline")
    committed = sorted((RESULTS / "pu2023-offline" / "csv").glob("*.csv"))
    assert {table.key for table in built.tables} == {path.stem for path in committed}
    for table in built.tables:
        assert render.csv_text(table) == (RESULTS / "pu2023-offline" / "csv" / f"{table.key}.csv").read_text(
            encoding="utf-8"), table.key
