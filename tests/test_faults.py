"""Faults beyond bad input: damaged and foreign stores, read commands that must not change a byte, read-only
and full file systems, and signals in every phase. Each promise is stated in docs/reliability.md."""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import mount_tmpfs, run_cli, store_of_one_run, write_suite
from peftbench.data import make_splits
from peftbench.evaluate import evaluate
from peftbench.interrupts import STOP, RunInterrupted
from peftbench.execution import build_task_model
from peftbench.runspec import single_run
from peftbench.store import SCHEMA_VERSION
from peftbench.tasks import get_task


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory) -> Path:
    """A store with one finished training run and its baseline."""
    return store_of_one_run(tmp_path_factory.mktemp("finished"))[1]


def _folder_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _read_commands(store: Path, out: Path) -> list[list]:
    return [["results", "--store", store, "--json"], ["results", "--store", store],
            ["report", "--store", store, "--out", out, "--format", "md,csv"],
            ["recommend", "--task-type", "classification", "--train-samples", "8", "--store", store]]


def _damaged_stores(tmp: Path, finished: Path) -> dict[str, tuple[Path, str]]:
    """name -> (store path, text the one-line error must contain)."""
    junk = tmp / "junk.db"
    junk.write_text("these are notes, not a database\n")
    truncated = tmp / "truncated.db"
    truncated.write_bytes(finished.read_bytes()[:6000])
    folder = tmp / "folder.db"
    folder.mkdir()
    blocker = tmp / "notes.txt"
    blocker.write_text("a file where a folder should be")
    foreign = tmp / "foreign.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE invoices (id INTEGER, amount REAL)")
    other_schema = tmp / "other.db"
    with sqlite3.connect(other_schema) as connection:
        connection.execute("CREATE TABLE runs (id INTEGER, payload TEXT)")
    return {
        "not a database": (junk, "is not a peftbench results store (not an SQLite database)"),
        "truncated": (truncated, "is damaged"),
        "a directory": (folder, "is a directory"),
        "parent is a file": (blocker / "results.db", "is a file, not a folder"),
        "foreign SQLite": (foreign, "not a peftbench results store (its tables: invoices)"),
        "other schema": (other_schema, "has a 'runs' table of another schema"),
    }


DAMAGED = ["not a database", "truncated", "a directory", "parent is a file", "foreign SQLite", "other schema"]


@pytest.mark.parametrize("command", ["run", "results", "report", "recommend"])
@pytest.mark.parametrize("damage", DAMAGED)
def test_a_damaged_or_foreign_store_is_refused_in_one_line_and_left_as_it_is(tmp_path, finished_store, damage,
                                                                            command):
    (tmp_path / "suite").mkdir()
    suite = write_suite(tmp_path / "suite" / "s.json", scales=[8], epochs=1) if command == "run" else None
    store, message = _damaged_stores(tmp_path, finished_store)[damage]
    before = _folder_digest(tmp_path)
    args = ["run", suite, "--store", store] if command == "run" else next(
        args for args in _read_commands(store, tmp_path / "report")[1:] if args[0] == command)
    code, out, err = run_cli(*args)
    assert code == 2, err
    assert message in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and out == ""
    assert _folder_digest(tmp_path) == before


def test_a_damaged_store_in_a_folder_with_spaces_gets_a_recover_command_that_runs_as_printed(tmp_path,
                                                                                               finished_store):
    folder = tmp_path / "my runs"
    folder.mkdir()
    (folder / "results.db").write_bytes(finished_store.read_bytes()[:6000])
    code, _, err = run_cli("results", "--store", folder / "results.db")
    assert code == 2 and f"`sqlite3 '{folder / 'results.db'}' .recover > rows.sql`" in err


def test_a_store_with_rows_of_a_newer_format_is_never_written(tmp_path, finished_store):
    folder = tmp_path / "newer"
    folder.mkdir()
    store = folder / "results.db"
    store.write_bytes(finished_store.read_bytes())
    with contextlib.closing(sqlite3.connect(store)) as connection, connection:
        connection.execute("UPDATE runs SET schema_version = 99")
    before = _folder_digest(folder)
    code, out, err = run_cli("run", write_suite(tmp_path / "s.json", scales=[8], epochs=1, seeds=[1]),
                             "--store", store)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "holds rows of format 99, written by a newer peftbench (this one writes format 3)" in err
    assert _folder_digest(folder) == before


def _legacy_copy(finished: Path, store: Path) -> None:
    """The store as peftbench wrote it before runs were claimed: no owner, lease_until or attempts column."""
    columns = "run_id, kind, suite, status, spec, result, error, finished_at"
    connection = sqlite3.connect(store, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, kind TEXT NOT NULL, suite TEXT NOT NULL,"
                       " status TEXT NOT NULL, spec TEXT NOT NULL, result TEXT NOT NULL, error TEXT,"
                       " finished_at REAL NOT NULL)")
    connection.execute(f"ATTACH DATABASE '{finished}' AS current")
    connection.execute(f"INSERT INTO runs SELECT {columns} FROM current.runs")
    connection.close()  # the last connection checkpoints the journal into the file and removes it


@pytest.mark.parametrize("layout", ["current", "legacy"])
def test_read_commands_change_no_byte_of_a_store_nor_its_journal_mode(tmp_path, finished_store, layout):
    folder = tmp_path / "copy"
    folder.mkdir()
    store = folder / "results.db"
    shutil.copy(finished_store, store) if layout == "current" else _legacy_copy(finished_store, store)
    before = _folder_digest(folder)
    for args in _read_commands(store, tmp_path / "report"):
        code, out, err = run_cli(*args)
        assert code == 0, err
        if args[-1] == "--json":
            # A legacy row is read as format 1 (peftbench.store.SCHEMA_VERSION), a current one as the current format.
            assert [(row["attempts"], row["schema_version"]) for row in json.loads(out)] == \
                [(1, 1 if layout == "legacy" else SCHEMA_VERSION)]
    assert _folder_digest(folder) == before  # no -wal or -shm file appeared either
    with sqlite3.connect(f"{store.as_uri()}?mode=ro", uri=True) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_store_being_written_is_read_through_the_writers_journal(tmp_path, finished_store):
    from peftbench.store import Store

    store = tmp_path / "results.db"
    shutil.copy(finished_store, store)
    writer = Store(store)  # an active runner: its -wal file exists
    try:
        writer.abandon("nobody", "no-op")
        main_file = store.read_bytes()
        code, out, err = run_cli("results", "--store", store, "--json", "--baselines")
        assert code == 0, err and len(json.loads(out)) == 2
        assert store.read_bytes() == main_file
    finally:
        writer.close()


@pytest.fixture
def small_filesystem(tmp_path):
    """A 2 MiB tmpfs: room for a store, and for filling up."""
    mount = tmp_path / "fs"
    mount_tmpfs(mount, "2m")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_store_in_a_read_only_folder_is_read_and_never_written(small_filesystem, finished_store, tmp_path):
    store = small_filesystem / "results.db"
    shutil.copy(finished_store, store)
    assert subprocess.run(["mount", "-o", "remount,ro", str(small_filesystem)]).returncode == 0
    for args in _read_commands(store, tmp_path / "report"):
        code, out, err = run_cli(*args)
        assert code == 0, err
    code, out, err = run_cli("run", write_suite(tmp_path / "s.json", scales=[8], epochs=1, seeds=[5]),
                             "--store", store, "--out", tmp_path / "summary")
    assert code == 2 and "cannot write the results store" in err and len(err.strip().splitlines()) == 1
    assert store.read_bytes() == finished_store.read_bytes()


def _start(suite: Path, store: Path, lease: float = 60, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "PEFTBENCH_LEASE_SECONDS": str(lease)}
    # As at a terminal: SIGINT at its default. A suite launched in the background (`cmd &` in a script)
    # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
    return subprocess.Popen([sys.executable, "-m", "peftbench.cli", "run", str(suite), "--store", str(store),
                             "--json", *flags], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _statuses(store: Path) -> dict[str, str]:
    if not store.exists():
        return {}
    with sqlite3.connect(f"{store.as_uri()}?mode=ro", uri=True, timeout=30) as connection:
        if not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchone():
            return {}
        return {json.loads(spec)["method"]: status
                for spec, status in connection.execute("SELECT spec, status FROM runs")}


def _wait_for(process: subprocess.Popen, reached, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not reached():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "timed out waiting for the runner"
        time.sleep(0.05)


def test_a_disk_that_fills_mid_run_gives_one_line_and_the_rerun_does_not_wait_out_the_lease(small_filesystem,
                                                                                          tmp_path):
    store = small_filesystem / "results.db"
    suite = write_suite(tmp_path / "full.json", scales=[32], epochs=2, baselines=[])
    process = _start(suite, store, lease=600)
    _wait_for(process, lambda: _statuses(store).get("lora") == "running")
    filler = small_filesystem / "filler"
    with open(filler, "wb") as handle:  # take every free byte while the run trains
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError:
            pass
    out, err = process.communicate(timeout=300)
    assert process.returncode == 2, err
    assert "no space left to write the results store" in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    filler.unlink()
    assert _statuses(store) == {"lora": "running"}  # the row could not be ended: its runner is gone
    started = time.monotonic()
    code, out, err = run_cli("run", suite, "--store", store, "--json")
    assert code == 0, err
    assert time.monotonic() - started < 300 and json.loads(out)["counts"] == {"skipped": 0, "finished": 1}
    assert _statuses(store) == {"lora": "finished"}


def _libtorch_loaded(process: subprocess.Popen) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{process.pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.parametrize("signals,code", [([signal.SIGINT], 130), ([signal.SIGINT, signal.SIGINT], 130),
                                          ([signal.SIGTERM], 143), ([signal.SIGHUP], 129)])
def test_a_signal_while_planning_exits_with_its_code(tmp_path, signals, code):
    suite = write_suite(tmp_path / "plan.json")
    process = _start(suite, tmp_path / "r.db")
    _wait_for(process, lambda: _libtorch_loaded(process))  # inside the run command, importing and planning
    for number in signals:
        process.send_signal(number)
    out, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("signals,code", [
    ([signal.SIGINT, signal.SIGINT], 130), ([signal.SIGTERM], 143), ([signal.SIGTERM, signal.SIGTERM], 143),
    ([signal.SIGHUP], 129)])  # SIGHUP: the terminal or SSH session closed
def test_signals_while_training_store_the_run_as_interrupted(tmp_path, signals, code):
    # Far more epochs than any machine trains in the second before the signal (no early stop), so the
    # signal always lands mid-run; a stop ends it within a step.
    suite = write_suite(tmp_path / "train.json", scales=[64], epochs=200, patience=200, baselines=[])
    store = tmp_path / "r.db"
    process = _start(suite, store)
    _wait_for(process, lambda: _statuses(store).get("lora") == "running")
    time.sleep(1.0)  # into the model load or the first steps
    for number in signals:
        process.send_signal(number)
        time.sleep(0.2)
    out, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    assert "Traceback" not in err and out == "" and len(err.strip().splitlines()) == 1
    assert _statuses(store) == {"lora": "interrupted"}


def test_a_stop_request_during_evaluation_interrupts_the_run():
    task = get_task("bbc_topic")
    spec = single_run("config:tiny-bert", "lora", n_train=8, batch_size=4, max_input_length=32, max_target_length=4,
                      group_by_length=True)
    task_model = build_task_model(spec, task)
    rows = make_splits(task, task.load(), 0, 8, 8).test
    STOP.set()
    try:
        with pytest.raises(RunInterrupted, match="during evaluation"):
            evaluate(task_model, rows, 4, "generate", 4)
    finally:
        STOP.clear()
    metrics, _ = evaluate(task_model, rows, 4, "generate", 4)
    assert metrics["n_test"] == 8


@pytest.mark.parametrize("command", [["results", "--store", "STORE"], ["params", "config:tiny-t5", "--method", "lora"],
                                     ["run", "SUITE", "--store", "STORE"]])
def test_ctrl_c_in_any_command_exits_130_not_0(tmp_path, finished_store, monkeypatch, command):
    """typer turns a KeyboardInterrupt into a *returned* 130: the exit code must not be dropped."""
    import peftbench.accounting
    import peftbench.planning
    import peftbench.store

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    for module, name in [(peftbench.store, "read_rows"), (peftbench.accounting, "count"), (peftbench.planning, "plan")]:
        monkeypatch.setattr(module, name, interrupted)
    args = [finished_store if a == "STORE" else write_suite(tmp_path / f"{uuid.uuid4().hex}.json") if a == "SUITE"
            else a for a in command]
    code, out, err = run_cli(*args)
    assert code == 130 and err.startswith("interrupted:") and len(err.strip().splitlines()) == 1


def test_results_json_stays_json_when_a_run_stored_non_finite_numbers(tmp_path, finished_store):
    store = tmp_path / "results.db"
    shutil.copy(finished_store, store)
    with sqlite3.connect(store) as connection:  # what a diverged run leaves: Python writes Infinity and NaN
        (result,) = connection.execute("SELECT result FROM runs WHERE kind = 'train'").fetchone()
        diverged = {**json.loads(result), "score": float("inf"), "best_val_loss": float("nan")}
        connection.execute("UPDATE runs SET result = ? WHERE kind = 'train'", (json.dumps(diverged),))
    code, out, err = run_cli("results", "--store", store, "--json")
    assert code == 0, err

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    (row,) = json.loads(out, parse_constant=refuse)
    assert row["score"] is None and row["best_val_loss"] is None
