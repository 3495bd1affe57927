"""Everyday file-system conditions give one line and exit 2, never a traceback, and leave nothing half-written:
`report --out` and `export --out` on a read-only or full file system, onto the store file or under a file; an
unreadable suite or data file; stdout on a full device; a FIFO given as a store; a price table that never ends."""

import errno
import hashlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import mount_tmpfs, run_cli, store_of_one_run, write_suite

# A file whose every read fails (EIO), for root too, whom no permission stops: an unreadable file anywhere.
UNREADABLE = Path("/proc/self/mem")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A store holding a finished LoRA run (its weights saved beside it) and its baseline."""
    _, store = store_of_one_run(tmp_path_factory.mktemp("finished"))
    with sqlite3.connect(store) as connection:
        run_id = connection.execute("SELECT run_id FROM runs WHERE kind = 'train'").fetchone()[0]
    return store, run_id


def _digest(folder: Path) -> dict[str, str]:
    """Every file's bytes, but for SQLite's shared-memory index and an empty journal: an earlier test of this
    worker that read the shared store in-process may still hold them open, and their closing removes them (what
    a command writes into the store or its journal still shows)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith("-shm")
            and not (p.name.endswith("-wal") and p.stat().st_size == 0)}


def _one_error_line(err: str, message: str) -> None:
    assert "Traceback" not in err and "Exception" not in err, err
    errors = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], err
    assert err.strip().splitlines()[-1] == errors[0]


def _writes(command: str, store: Path, run_id: str, out: Path) -> list:
    return (["report", "--store", store, "--out", out, "--format", "md,csv"] if command == "report"
            else ["export", run_id, "--store", store, "--out", out])


@pytest.mark.parametrize("command", ["report", "export"])
@pytest.mark.parametrize("where", ["the store file", "under the store file"])
def test_out_onto_or_under_a_file_is_refused_in_one_line(finished, command, where):
    store, run_id = finished
    before = _digest(store.parent)
    out = store if where == "the store file" else store / "report"
    code, out_text, err = run_cli(*_writes(command, store, run_id, out))
    assert code == 2
    _one_error_line(err, f"'{store}' is a file, not a folder; pass a folder path")
    assert _digest(store.parent) == before


@pytest.mark.parametrize("command", ["report", "export"])
def test_a_write_that_fails_half_way_leaves_no_folder_behind(finished, tmp_path, monkeypatch, command):
    """Without mounting anything: the disk fills after the first files of the folder are written."""
    store, run_id = finished
    written, write_text = [], Path.write_text

    def fills_up(path, *args, **kwargs):
        written.append(path)
        if len(written) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", fills_up)
    out = tmp_path / "new" / "folder"
    code, _, err = run_cli(*_writes(command, store, run_id, out))
    assert code == 2 and len(written) == 2
    _one_error_line(err, f"'{out}': No space left on device; free disk space and run the same command again")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor the parent made for it


def test_a_report_over_an_earlier_one_replaces_its_files_and_keeps_the_others(finished, tmp_path):
    store, _ = finished
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "report.md").write_text("an older report")
    code, _, err = run_cli("report", "--store", store, "--out", out, "--format", "md")
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine" and (out / "report.md").read_text().startswith("#")
    assert [path.name for path in tmp_path.iterdir()] == ["report"]  # no staging folder left beside it


@pytest.fixture
def mounted(tmp_path):
    mount = tmp_path / "fs"
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("command", ["report", "export"])
@pytest.mark.parametrize("condition", ["read-only", "full"])
def test_out_on_a_read_only_or_full_file_system_gives_one_line_and_leaves_nothing(finished, mounted, command,
                                                                                   condition):
    store, run_id = finished
    before = _digest(store.parent)
    mount_tmpfs(mounted, "1m" if condition == "read-only" else "64k")
    if condition == "read-only":
        assert subprocess.run(["mount", "-o", "remount,ro", str(mounted)]).returncode == 0
    out = mounted / "out"
    code, _, err = run_cli(*_writes(command, store, run_id, out))
    assert code == 2
    reason = "Read-only file system; pass a path on a writable" if condition == "read-only" else \
        "No space left on device; free disk space"
    _one_error_line(err, f"'{out}': {reason}")
    assert list(mounted.iterdir()) == []
    assert _digest(store.parent) == before


def _cli(*args, env=None, stdout=subprocess.PIPE, timeout=300) -> subprocess.CompletedProcess:
    """The CLI in its own process (a hang is a failure, not a hung test session), memory capped at 4 GiB."""
    cap = lambda: resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # noqa: E731
    return subprocess.run([sys.executable, "-m", "peftbench.cli", *map(str, args)], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          preexec_fn=cap)


@pytest.mark.parametrize("command", ["results", "results --json"])
def test_stdout_on_a_full_device_gives_one_line(finished, command):
    store, _ = finished
    with open("/dev/full", "w") as full:
        done = _cli(*command.split(), "--store", store, stdout=full)
    assert done.returncode == 2
    _one_error_line(done.stderr, "the output: No space left on device")


@pytest.mark.parametrize("command", ["results", "recommend", "run"])
def test_a_fifo_given_as_the_store_is_refused_not_waited_on(tmp_path, command):
    fifo = tmp_path / "results.db"
    os.mkfifo(fifo)
    args = ["run", write_suite(tmp_path / "s.json")] if command == "run" else [command]
    done = _cli(*args, "--store", fifo, timeout=240)
    assert done.returncode == 2
    _one_error_line(done.stderr, f"the results store '{fifo}' is not a regular file")


@pytest.mark.parametrize("table", ["/dev/zero", "/dev/urandom", "huge"])
def test_a_price_table_that_never_ends_is_refused(tmp_path, table):
    if table == "huge":
        table = tmp_path / "prices.yaml"
        table.write_text("gpu: {usd_per_hour: 1.0}\n" + "# padding\n" * 200_000)
    suite = write_suite(tmp_path / "s.json", price="gpu")
    done = _cli("run", suite, "--store", tmp_path / "results.db", env={"PEFTBENCH_PRICES": str(table)}, timeout=240)
    assert done.returncode == 2
    _one_error_line(done.stderr, f"price table '{table}' is")
    assert not (tmp_path / "results.db").exists()


def test_an_unreadable_suite_file_gives_one_line(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.symlink_to(UNREADABLE)
    code, _, err = run_cli("run", suite, "--store", tmp_path / "results.db")
    assert code == 2
    _one_error_line(err, f"cannot read the suite file: '{suite}': Input/output error")
    assert not (tmp_path / "results.db").exists()


def test_an_unreadable_data_file_gives_one_line(tmp_path):
    data = tmp_path / "train.jsonl"
    data.symlink_to(UNREADABLE)
    code, _, err = run_cli("run", write_suite(tmp_path / "s.json", tasks=[f"file:{data}"]),
                           "--store", tmp_path / "results.db")
    assert code == 2
    _one_error_line(err, f"cannot read the data file: '{data}': Input/output error")
    assert not (tmp_path / "results.db").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its permissions")
def test_a_data_file_without_read_permission_gives_one_line(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"text": "a", "label": "x"}) + "\n")
    data.chmod(0)
    code, _, err = run_cli("run", write_suite(tmp_path / "s.json", tasks=[f"file:{data}"]),
                           "--store", tmp_path / "results.db")
    assert code == 2
    _one_error_line(err, f"cannot read the data file: '{data}': Permission denied")
