"""A row the store's reader does not understand (valid JSON of another shape: another version's layout, a hand
edit) is named in one warning line and skipped by every command; none of them fails on it, and the read
commands leave the store byte-identical."""

import hashlib
import json
import shutil
import sqlite3

import pytest

from conftest import run_cli, store_of_one_run


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A store holding a finished run and its baseline, and the suite that made it."""
    return store_of_one_run(tmp_path_factory.mktemp("seeded"))


def _odd(spec: dict, result: dict) -> dict[str, tuple[str, str, str, str]]:
    """name -> (kind, status, spec, result) of a row of another shape, made from a good row's spec and result."""
    without_model = {key: value for key, value in spec.items() if key != "model"}
    return {
        "spec of another version": ("train", "finished", json.dumps({"version": 9, "run": spec}), json.dumps(result)),
        "spec without a key": ("train", "finished", json.dumps(without_model), json.dumps(result)),
        "number where a name goes": ("train", "finished", json.dumps({**spec, "model": 5}), json.dumps(result)),
        "boolean seed": ("train", "finished", json.dumps({**spec, "seed": True}), json.dumps(result)),
        "spec is a list": ("train", "finished", json.dumps([spec]), json.dumps(result)),
        "spec is null": ("train", "finished", "null", json.dumps(result)),
        "result is text": ("train", "finished", json.dumps(spec), json.dumps("done")),
        "unknown status": ("train", "queued", json.dumps(spec), json.dumps(result)),
        "unknown kind": ("probe", "finished", json.dumps(spec), json.dumps(result)),
        "spec is not JSON": ("train", "finished", "{'model': 'x'}", json.dumps(result)),
    }


ODD = ["spec of another version", "spec without a key", "number where a name goes", "boolean seed", "spec is a list",
       "spec is null", "result is text", "unknown status", "unknown kind", "spec is not JSON"]
ODD_ID = "0dd0dd0dd0dd0dd0"


def _with_odd_row(tmp_path, store, case: str):
    folder = tmp_path / "store"
    shutil.copytree(store.parent, folder)
    connection = sqlite3.connect(folder / store.name)
    spec, result = connection.execute("SELECT spec, result FROM runs WHERE kind = 'train'").fetchone()
    kind, status, odd_spec, odd_result = _odd(json.loads(spec), json.loads(result))[case]
    with connection:
        connection.execute("INSERT INTO runs (run_id, kind, suite, status, spec, result, finished_at)"
                           " VALUES (?, ?, 'seeded', ?, ?, ?, 0)", (ODD_ID, kind, status, odd_spec, odd_result))
    connection.close()
    return folder / store.name


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_named_and_skipped(err: str, store) -> None:
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    warnings = [line for line in lines if line.startswith("warning: skipped run")]
    assert len(warnings) == 1, err
    assert f'"{ODD_ID}"' in warnings[0] and f"sqlite3 {store} 'DELETE FROM runs WHERE rowid = 3'" in warnings[0]


def test_the_catalogue_lists_every_case():
    assert sorted(_odd({}, {})) == sorted(ODD)


@pytest.mark.parametrize("case", ODD)
def test_results_names_and_skips_a_row_of_another_shape(tmp_path, seeded, case):
    _, store = seeded
    odd = _with_odd_row(tmp_path, store, case)
    before = _digest(odd)
    code, out, err = run_cli("results", "--store", odd, "--json")
    assert code == 0, err
    _assert_named_and_skipped(err, odd)
    assert [row["run_id"] for row in json.loads(out)] and ODD_ID not in out
    assert _digest(odd) == before


COMMANDS = {
    "results": lambda tmp, store, suite: ["results"],
    "results --seeds": lambda tmp, store, suite: ["results", "--seeds"],
    "show": lambda tmp, store, suite: ["show", _good_id(store)],
    "report": lambda tmp, store, suite: ["report", "--out", tmp / "report", "--format", "md,csv"],
    "recommend": lambda tmp, store, suite: ["recommend"],
}


def _good_id(store) -> str:
    connection = sqlite3.connect(store)
    try:
        query = "SELECT run_id FROM runs WHERE kind = 'train' AND run_id != ?"
        return connection.execute(query, (ODD_ID,)).fetchone()[0]
    finally:
        connection.close()


@pytest.mark.parametrize("case", ["spec without a key", "number where a name goes"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_read_command_names_and_skips_it_and_changes_nothing(tmp_path, seeded, command, case):
    suite, store = seeded
    odd = _with_odd_row(tmp_path, store, case)
    before = _digest(odd)
    code, out, err = run_cli(*COMMANDS[command](tmp_path, odd, suite), "--store", odd)
    assert code == 0, err
    _assert_named_and_skipped(err, odd)
    assert out.strip()
    assert _digest(odd) == before


def test_run_names_and_skips_it_and_leaves_it_as_it_was(tmp_path, seeded):
    suite, store = seeded
    odd = _with_odd_row(tmp_path, store, "spec without a key")
    select = "SELECT * FROM runs WHERE run_id = ?"
    row = lambda: sqlite3.connect(odd).execute(select, (ODD_ID,)).fetchone()  # noqa: E731
    kept = row()
    code, out, err = run_cli("run", suite, "--store", odd, "--set", "seeds=[0, 1]", "--json")
    assert code == 0, err
    _assert_named_and_skipped(err, odd)
    assert row() == kept
    assert {run["status"] for run in json.loads(out)["runs"]} == {"finished"}
