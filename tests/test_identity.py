"""A run's identity and configuration: equivalent method specs are one run (one id), and the report's seeds
of one configuration are runs whose specs differ in the seed alone, whatever field the others differ in."""

import shutil
from pathlib import Path

import pytest
from conftest import run_json, write_suite

from peftbench.suite_files import load_suite
from peftbench.configurations import configs
from peftbench.planning import plan
from peftbench.store import SCHEMA_VERSION, Store, read_rows

OFFLINE_DB = Path(__file__).resolve().parents[1] / "docs" / "results" / "offline.db"


def _plan(tmp_path: Path, methods: list[str], **fields):
    suite = load_suite(str(write_suite(tmp_path / "suite.json", methods=methods, baselines=[], seeds=[0, 1], **fields)))
    return plan(suite)


def test_equivalent_method_specs_are_one_run(tmp_path):
    [lora] = {run.spec["method_spec"] for run in _plan(tmp_path, ["lora"]).runs}
    default = {run.run_id for run in _plan(tmp_path, ["lora"]).runs}
    spelled = _plan(tmp_path, ["lora", "lora[r=8]", "lora[alpha=16,r=8]"])
    assert lora == "lora" and len(default) == 2  # two seeds
    assert {run.run_id for run in spelled.runs} == default and len(spelled.runs) == 2
    assert {run.run_id for run in _plan(tmp_path, ["lora[r=8]"]).runs} == default
    assert {run.run_id for run in _plan(tmp_path, ["lora[alpha=16,r=8]"]).runs} == default
    # Options that differ from the defaults stay, sorted and typed: both spellings are lora[alpha=32,r=16].
    one, other = (_plan(tmp_path, [spec]) for spec in ("lora[r=16,alpha=32]", "lora[alpha=32.0, r=16]"))
    assert {run.spec["method_spec"] for run in one.runs} == {"lora[alpha=32,r=16]"}
    assert {run.run_id for run in one.runs} == {run.run_id for run in other.runs}
    assert not {run.run_id for run in one.runs} & default


def test_a_learning_rate_given_for_any_spelling_applies_to_the_canonical_run(tmp_path):
    grid = _plan(tmp_path, ["lora[alpha=16,r=8]"], learning_rates={"lora[alpha=16,r=8]": 0.02})
    assert {run.spec["lr"] for run in grid.runs} == {0.02}


# Spec fields that used to be missing from the report's hand-kept list of what makes configurations differ,
# and a value each can take besides the suite's default.
VARIANTS = {"budget": {"usd": 1.0, "usd_per_hour": 2.0, "seconds": 1800.0}, "bf16_autocast": False,
            "merge_for_eval": False, "fused_adamw": False, "weights_dtype": "bfloat16", "cpu_bf16": "on",
            "lr": 0.5, "group_by_length": False}


@pytest.mark.parametrize("field", sorted(VARIANTS))
def test_runs_differing_in_any_spec_field_are_separate_configurations(tmp_path, field):
    """Two seeds at the suite's settings and two with one field changed, stored and read back: two
    configurations of two seeds each, the changed one labelled with the field, never four seeds of one."""
    specs = [run.spec for run in _plan(tmp_path, ["lora"]).runs]
    assert field in specs[0] or field == "budget"  # budget is present only when the suite sets one
    store = Store(tmp_path / "results.db")
    for index, spec in enumerate([*specs, *({**spec, field: VARIANTS[field]} for spec in specs)]):
        run_id = f"run{index}"
        assert store.claim(run_id, "train", "s", spec, "me", 0.0, 60.0)
        assert store.end(run_id, "me", "finished", {"score": 0.5 + index / 10, "primary_metric": "accuracy"})
    store.close()
    rows = read_rows(tmp_path / "results.db")
    assert {row["schema_version"] for row in rows} == {SCHEMA_VERSION}
    found = configs(rows)
    assert [config.seeds for config in found] == [2, 2]
    assert sorted(config.score().mean for config in found) == pytest.approx([0.55, 0.75])
    changed = next(config for config in found if config.runs[0]["run_id"] == "run2")
    assert field in changed.label and changed.label != found[0].label


def test_the_committed_store_reads_as_legacy_rows_with_their_ids(tmp_path):
    store = tmp_path / "offline.db"
    shutil.copy(OFFLINE_DB, store)
    before = read_rows(store)
    assert len(before) == 58 and {row["schema_version"] for row in before} == {1}
    # A writer migrates it (adds the column) without touching the old rows, and a new row carries the version.
    writer = Store(store)
    writer.claim("new", "train", "s", before[-1]["spec"], "me", 0.0, 60.0)
    writer.close()
    after = {row["run_id"]: row for row in read_rows(store)}
    assert after.pop("new")["schema_version"] == SCHEMA_VERSION
    assert {run_id: row["schema_version"] for run_id, row in after.items()} == {row["run_id"]: 1 for row in before}
    assert [row["spec"] for row in after.values()] == [row["spec"] for row in before]


def test_a_planned_grid_stores_canonical_specs_at_the_current_version(tmp_path):
    suite = write_suite(tmp_path / "s.json", methods=["lora[alpha=16,r=8]"], baselines=["majority"], epochs=1,
                        scales=[8], val_cap=4, test_cap=4)
    run_json("run", suite, "--store", tmp_path / "r.db", "--device", "cpu", "--json")
    rows = read_rows(tmp_path / "r.db")
    assert sorted(row["method_spec"] for row in rows) == ["lora", "majority"]
    assert {row["schema_version"] for row in rows} == {SCHEMA_VERSION}
