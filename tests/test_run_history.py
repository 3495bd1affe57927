"""Keeping, redoing and forgetting runs: the default `save: auto` keeps a small model's full tuning (so the run
`recommend` ranks first can be exported) and names the fix above its limit; `run --rerun` trains stored runs
again and keeps their earlier rows as superseded history; `rm` deletes runs with their history and weights.
Every wrong id is one line, exit 2, with the store's bytes unchanged."""

import hashlib
import sqlite3

import pytest

from conftest import run_cli, run_json, write_suite
from peftbench import execution


def store_state(store) -> tuple[str, list[str]]:
    """The store's bytes and the files beside it (weights included)."""
    return (hashlib.sha256(store.read_bytes()).hexdigest(),
            sorted(str(path.relative_to(store.parent)) for path in store.parent.rglob("*")))


@pytest.fixture
def stored(tmp_path):
    suite = write_suite(tmp_path / "two.json", methods=["lora", "ln_tuning"], scales=[8], epochs=1, baselines=[])
    store = tmp_path / "results.db"
    rows = {row["method"]: row for row in run_json("run", suite, "--store", store, "--json")["runs"]}
    return suite, store, rows


def test_save_auto_keeps_full_tuning_up_to_its_limit_and_names_the_fix_above_it(tmp_path, monkeypatch):
    store = tmp_path / "results.db"
    full = write_suite(tmp_path / "full.json", methods=["full"], scales=[8], epochs=1, baselines=[])
    (row,) = run_json("run", full, "--store", store, "--json")["runs"]
    assert row["weights"]["tensors"] > 0 and row["weights"]["bytes"] > 100_000  # the whole tiny model
    assert run_json("export", row["run_id"], "--store", store, "--out", tmp_path / "out", "--merged", "--json")[
        "format"] == "merged"
    (row,) = run_json("run", full, "--store", store, "--set", "save=methods", "--seed", "1", "--json")["runs"]
    assert row.get("weights") is None and "kept with save: all" in row["weights_skipped"]
    monkeypatch.setattr(execution, "AUTO_SAVE_LIMIT_BYTES", 1000)
    (row,) = run_json("run", full, "--store", store, "--seed", "2", "--json")["runs"]
    assert row.get("weights") is None and "or save: auto up to 0 MB" in row["weights_skipped"]
    code, _, err = run_cli("export", row["run_id"], "--store", store, "--out", tmp_path / "none")
    assert code == 2 and f"--set save=all --rerun {row['run_id'][:8]}" in err and len(err.strip().splitlines()) == 1
    (row,) = run_json("run", full, "--store", store, "--seed", "2", "--set", "save=all", "--rerun", row["run_id"],
                      "--json")["runs"]
    assert row["weights"]["tensors"] > 0  # the fix the message names works


def test_rerun_trains_a_run_again_and_keeps_its_earlier_result_as_history(stored, tmp_path):
    suite, store, rows = stored
    lora, other = rows["lora"], rows["ln_tuning"]
    done = run_json("run", suite, "--store", store, "--rerun", lora["run_id"][:8], "--json")
    assert done["counts"] == {"finished": 1, "skipped": 1}
    shown = run_json("show", lora["run_id"], "--store", store, "--json")
    assert shown["finished_at"] > lora["finished_at"] and shown["attempts"] == 1
    assert run_json("show", other["run_id"], "--store", store, "--json")["finished_at"] == other["finished_at"]
    assert [(h["reason"], h["status"], h["score"], h["finished_at"]) for h in shown["history"]] == [
        ("rerun", "finished", lora["score"], lora["finished_at"])]
    assert shown["saved"]["present"] and shown["saved"]["sha256"] == shown["weights"]["sha256"]
    # A second rerun adds a second history row; plain runs skip it again.
    run_json("run", suite, "--store", store, "--rerun", lora["run_id"], "--json")
    assert len(run_json("show", lora["run_id"], "--store", store, "--json")["history"]) == 2
    assert run_json("run", suite, "--store", store, "--json")["counts"] == {"skipped": 2}


def test_a_wrong_rerun_id_is_one_line_and_leaves_the_store_as_it_was(stored, tmp_path):
    suite, store, rows = stored
    elsewhere = write_suite(tmp_path / "other.json", methods=["bitfit"], scales=[8], epochs=1, baselines=[])
    (foreign,) = run_json("run", elsewhere, "--store", store, "--json")["runs"]
    before = store_state(store)
    for wrong, message in ((["zzzz"], "no run in"), ([rows["lora"]["run_id"], "zzzz"], "with an id starting 'zzzz'"),
                           ([foreign["run_id"][:8]], "is not a run of the grid of 'two' (it was filed under 'other')")):
        code, out, err = run_cli("run", suite, "--store", store, *[arg for w in wrong for arg in ("--rerun", w)])
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert store_state(store) == before


def test_rm_deletes_runs_with_their_history_and_weights(stored, tmp_path):
    suite, store, rows = stored
    lora, other = rows["lora"], rows["ln_tuning"]
    run_json("run", suite, "--store", store, "--rerun", lora["run_id"], "--json")
    before = store_state(store)
    for wrong in (["zzzz"], [lora["run_id"][:6], "zzzz"], [""]):  # unknown, one of two unknown, ambiguous
        code, out, err = run_cli("rm", *wrong, "--store", store)
        assert code == 2 and "in '" in err and len(err.strip().splitlines()) == 1 and out == "", err
        assert store_state(store) == before
    folder = tmp_path / lora["weights"]["folder"]
    size = sum(path.stat().st_size for path in folder.iterdir())  # the tensors and the manifest
    assert size > lora["weights"]["bytes"]
    done = run_json("rm", lora["run_id"][:6], "--store", store, "--json")
    assert done == {"removed": [lora["run_id"]], "history_rows": 1, "runs_left": 1, "weights_bytes_freed": size}
    assert not (tmp_path / lora["weights"]["folder"]).exists() and (tmp_path / other["weights"]["folder"]).is_dir()
    assert [row["run_id"] for row in run_json("results", "--store", store, "--seeds", "--json")] == [other["run_id"]]
    with sqlite3.connect(store) as connection:
        assert connection.execute("SELECT count(*) FROM superseded").fetchone() == (0,)
    assert run_json("run", suite, "--store", store, "--json")["counts"] == {"finished": 1, "skipped": 1}


def test_a_store_from_before_history_is_read_and_edited_as_it_is(stored):
    suite, store, rows = stored
    with sqlite3.connect(store) as connection:
        connection.execute("DROP TABLE superseded")
    assert run_json("show", rows["lora"]["run_id"], "--store", store, "--json")["history"] == []
    assert run_json("rm", rows["lora"]["run_id"], "--store", store, "--json")["removed"] == [rows["lora"]["run_id"]]
    run_json("run", suite, "--store", store, "--rerun", rows["ln_tuning"]["run_id"], "--json")
    assert len(run_json("show", rows["ln_tuning"]["run_id"], "--store", store, "--json")["history"]) == 1
