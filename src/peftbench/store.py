"""SQLite results store: one row per run, keyed by the hash of its normalised spec. Every write is one
statement in WAL mode, so a row is there whole or not at all, even if the process is killed.

Runners that share a store split the work by claiming runs: a claim sets a run's row to `running`
with the runner's id and a lease expiry. The runner's heartbeat renews its leases while it works;
another runner skips a run under a live lease and takes over one whose lease ran out (its runner
died), or at once when the claim belongs to a process of this machine that no longer exists. A
finished row is never overwritten: `peftbench run --rerun` first moves it, whole, into the `superseded`
history table (Store.supersede), and `peftbench rm` deletes a run's row with its history (Store.remove).

Reading (`read_rows`: results, report, recommend) opens the file read-only and changes nothing, not even
its journal mode. Every SQLite or file-system error becomes one UserError naming the store and the fix."""

import errno
import functools
import json
import os
import shlex
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from peftbench.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,          -- train | baseline
    suite TEXT NOT NULL,
    status TEXT NOT NULL,        -- running | finished | failed | interrupted
    spec TEXT NOT NULL,          -- JSON: the normalised run spec
    result TEXT NOT NULL,        -- JSON: metrics and measurements ({} while running)
    error TEXT,
    finished_at REAL NOT NULL,   -- when the run ended; while running, when it was claimed
    owner TEXT,                  -- the runner that claimed it last
    lease_until REAL,            -- while running: the claim lapses after this time unless renewed
    attempts INTEGER NOT NULL DEFAULT 1,  -- how many times a runner has started it
    schema_version INTEGER       -- the row format (SCHEMA_VERSION) of the code that claimed it last
)
"""
# Earlier results of runs trained again (`run --rerun`): the runs row as it was, and when and why it was replaced.
# Stores written before it existed have no such table; a writer creates it on opening, readers need none.
HISTORY_SCHEMA = """
CREATE TABLE IF NOT EXISTS superseded (
    run_id TEXT NOT NULL, kind TEXT NOT NULL, suite TEXT NOT NULL, status TEXT NOT NULL, spec TEXT NOT NULL,
    result TEXT NOT NULL, error TEXT, finished_at REAL NOT NULL, owner TEXT, attempts INTEGER, schema_version INTEGER,
    superseded_at REAL NOT NULL,
    reason TEXT NOT NULL
)
"""
HISTORY_COLUMNS = "run_id, kind, suite, status, spec, result, error, finished_at, owner, attempts, schema_version"
RUN_COLUMNS = {"run_id", "kind", "suite", "status", "spec", "result", "error", "finished_at"}
# Stores written before runs were claimed (or versioned) lack these columns; a writer adds them on opening.
ADDED_COLUMNS = {"owner": "TEXT", "lease_until": "REAL", "attempts": "INTEGER NOT NULL DEFAULT 1",
                 "schema_version": "INTEGER"}
# The format of the rows this code writes. 1: rows written before the version was stored (read as they were,
# keeping their run ids; their method specs are spelled as their suites wrote them). 2: method specs in their
# canonical spelling (Method.canonical), so equivalent specs share one run id. 3: a finished row's result holds
# its facts (peftbench.run_facts.RunFacts); older rows get them derived when read for a report
# (peftbench.recording).
SCHEMA_VERSION = 3
LEGACY_SCHEMA_VERSION = 1

# Take the run if nobody has it, if its claim lapsed (dead runner), is our own (a retry) or is held by a
# process known to be dead, or if it failed or was interrupted before this runner started (a concurrent
# runner's failure is not retried).
CLAIM = """
INSERT INTO runs (run_id, kind, suite, status, spec, result, error, finished_at, owner, lease_until, schema_version)
VALUES (:run_id, :kind, :suite, 'running', :spec, '{}', NULL, :now, :owner, :lease_until, :schema_version)
ON CONFLICT (run_id) DO UPDATE SET
    suite = excluded.suite, schema_version = excluded.schema_version, status = 'running', result = '{}', error = NULL, finished_at = excluded.finished_at,
    owner = excluded.owner, lease_until = excluded.lease_until, attempts = attempts + 1
WHERE (status = 'running' AND (lease_until < :now OR owner = :owner OR owner = :dead_owner))
   OR (status IN ('failed', 'interrupted') AND finished_at < :since)
"""


# The row every reader relies on, as every store has held it since the first (docs/results/offline.db, schema
# version 1): its kind and status, and the spec keys with their JSON types (a float may be written as an integer;
# a boolean is never a number). The store's reader names and skips a row of another shape (another version's
# layout, a hand edit) instead of letting a report or a ranking fail on it half-way (_rows below).
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


def runner_id() -> str:
    """A runner's id: readable, unique per call, and telling which process on which machine holds a claim."""
    import uuid

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _is_dead_local_process(owner: str) -> bool:
    """True when `owner` is a runner of this machine whose process has exited (killed, crashed, out of
    disk): its claims need not wait out their lease. A reused pid reads as alive, so we then wait."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by another user
        return False
    return False


def _explain(path: Path, error: Exception) -> str:
    """One line naming the store, what is wrong with it and what to do."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    number = getattr(error, "errno", None) or getattr(error, "sqlite_errorcode", None)
    if path.is_dir():
        return f"the results store '{path}' is a directory; pass --store with a file path such as {path / 'results.db'}"
    if path.exists() and not path.is_file():
        return (f"the results store '{path}' is not a regular file (a pipe, a device or a socket), which SQLite would"
                " wait on or damage; pass --store with a file path")
    if blocker := _blocking_file(path):
        return (f"the results store '{path}' cannot be created: '{blocker}' is a file, not a folder;"
                " pass --store elsewhere")
    if "not a database" in text:
        return f"'{path}' is not a peftbench results store (not an SQLite database); pass --store with the right file"
    if "malformed" in text or isinstance(error, sqlite3.DatabaseError) and "corrupt" in text:
        return (f"the results store '{path}' is damaged ({text}); restore it from a copy, or save what is left with"
                f" `sqlite3 {shlex.quote(str(path))} .recover > rows.sql`")
    if number in (errno.ENOSPC, sqlite3.SQLITE_FULL) or "disk is full" in text or "No space left" in text:
        return f"no space left to write the results store '{path}'; free disk space and run the same command again"
    if number in (errno.EROFS, errno.EACCES, errno.EPERM, sqlite3.SQLITE_READONLY) or "readonly" in text \
            or "read-only" in text.lower() or "Permission denied" in text:
        return f"cannot write the results store '{path}' ({text}); pass --store PATH in a writable folder"
    if "unable to open" in text and not os.access(path.parent if path.parent.exists() else Path.cwd(), os.W_OK):
        verb = "write" if path.exists() else "create"
        return (f"cannot {verb} the results store '{path}': its folder is read-only;"
                " pass --store PATH in a writable folder")
    if "locked" in text or "busy" in text:
        return f"the results store '{path}' stayed locked by another process for 30 s; try again when it is free"
    return f"cannot use the results store '{path}' ({type(error).__name__}: {text}); check the path and its folder"


@contextmanager
def store_errors(path: Path) -> Iterator[None]:
    """The one place where SQLite and file-system errors about a store become the one-line UserError."""
    try:
        yield
    except (sqlite3.Error, OSError) as error:
        raise UserError(_explain(path, error)) from None


def _guarded(method):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with store_errors(self.path):
            return method(self, *args, **kwargs)
    return call


def _check_schema(path: Path, connection: sqlite3.Connection, writable: bool) -> set[str]:
    """The `runs` table's columns, after checking the database is a peftbench store. A database without
    any table is a new store (a writer creates it); one with other tables or another `runs` is refused."""
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "runs" not in tables:
        if tables or not writable:
            raise UserError(f"'{path}' is an SQLite database but not a peftbench results store (its tables:"
                            f" {', '.join(sorted(tables)) or 'none'}); pass --store with a peftbench store")
        return set()
    columns = {row[1] for row in connection.execute("PRAGMA table_info(runs)")}
    if not RUN_COLUMNS <= columns:
        missing = ", ".join(sorted(RUN_COLUMNS - columns))
        raise UserError(f"'{path}' has a 'runs' table of another schema (no {missing}); it is not a peftbench"
                        " results store, pass --store with another file")
    return columns


def _refuse_newer_rows(path: Path, connection: sqlite3.Connection, columns: set[str]) -> None:
    """A store that a newer peftbench has written to is not written by this one: its rows may mean what this
    code cannot know, and a row this code claimed would lose the newer fields."""
    if "schema_version" not in columns:
        return
    newest = connection.execute("SELECT max(schema_version) FROM runs").fetchone()[0]
    if newest is not None and newest > SCHEMA_VERSION:
        raise UserError(f"the results store '{path}' holds rows of format {newest}, written by a newer peftbench"
                        f" (this one writes format {SCHEMA_VERSION}); upgrade peftbench, or pass --store with"
                        " another file")


class Store:
    """The store opened for writing (`peftbench run`): created if absent, migrated if older."""

    def __init__(self, path: Path):
        self.path = path
        with store_errors(path):
            _regular(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit: each statement is its own transaction; the one multi-statement change says BEGIN.
            self.connection = sqlite3.connect(path, timeout=30, isolation_level=None)
            try:
                self.connection.execute("BEGIN IMMEDIATE")  # two runners opening an old store add columns once
                present = _check_schema(path, self.connection, writable=True)
                _refuse_newer_rows(path, self.connection, present)
                self.connection.execute(SCHEMA)
                self.connection.execute(HISTORY_SCHEMA)
                for name, declaration in ADDED_COLUMNS.items():
                    if present and name not in present:
                        self.connection.execute(f"ALTER TABLE runs ADD COLUMN {name} {declaration}")
                self.connection.execute("COMMIT")
                self.connection.execute("PRAGMA journal_mode=WAL")
            except BaseException:
                self.connection.close()
                raise

    @_guarded
    def finished_ids(self) -> set[str]:
        return {row[0] for row in self.connection.execute("SELECT run_id FROM runs WHERE status = 'finished'")}

    @_guarded
    def claim(self, run_id: str, kind: str, suite: str, spec: dict, owner: str, since: float,
              lease_seconds: float) -> bool:
        """Claim a run for `owner` (a runner started at time `since`); False if it is finished or taken."""
        now = time.time()
        holder = self.connection.execute("SELECT owner FROM runs WHERE run_id = ? AND status = 'running'",
                                         (run_id,)).fetchone()
        dead_owner = holder[0] if holder and holder[0] and _is_dead_local_process(holder[0]) else None
        cursor = self.connection.execute(CLAIM, {
            "run_id": run_id, "kind": kind, "suite": suite, "spec": json.dumps(spec, sort_keys=True, default=str),
            "now": now, "owner": owner, "lease_until": now + lease_seconds, "since": since, "dead_owner": dead_owner,
            "schema_version": SCHEMA_VERSION})
        return cursor.rowcount == 1

    @_guarded
    def end(self, run_id: str, owner: str, status: str, result: dict, error: str | None = None) -> bool:
        """Store how a claimed run ended; False (nothing written) if `owner` no longer holds the claim."""
        cursor = self.connection.execute(
            "UPDATE runs SET status = ?, result = ?, error = ?, finished_at = ?, lease_until = NULL"
            " WHERE run_id = ? AND owner = ? AND status = 'running'",
            (status, json.dumps(result, sort_keys=True, default=str), error, time.time(), run_id, owner))
        return cursor.rowcount == 1

    @_guarded
    def renew(self, owner: str, lease_seconds: float) -> None:
        self.connection.execute("UPDATE runs SET lease_until = ? WHERE owner = ? AND status = 'running'",
                                (time.time() + lease_seconds, owner))

    @_guarded
    def abandon(self, owner: str, reason: str) -> int:
        """Mark every run `owner` still holds as interrupted; returns how many."""
        return self.connection.execute(
            "UPDATE runs SET status = 'interrupted', error = ?, finished_at = ?, lease_until = NULL"
            " WHERE owner = ? AND status = 'running'", (reason, time.time(), owner)).rowcount

    @_guarded
    def running_elsewhere(self, owner: str) -> set[str]:
        """Runs claimed by other runners, live or lapsed."""
        return {row[0] for row in self.connection.execute(
            "SELECT run_id FROM runs WHERE status = 'running' AND owner != ?", (owner,))}

    @_guarded
    def supersede(self, run_ids: list[str], reason: str) -> None:
        """Move the runs' rows into the history table in one transaction, so that they run again; their saved
        weights are the caller's to remove (the history row keeps the record of what they were)."""
        self._refuse_running(run_ids)
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            for run_id in run_ids:
                self.connection.execute(
                    f"INSERT INTO superseded ({HISTORY_COLUMNS}, superseded_at, reason) SELECT {HISTORY_COLUMNS},"
                    " ?, ? FROM runs WHERE run_id = ?", (time.time(), reason, run_id))
                self.connection.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
            self.connection.execute("COMMIT")
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise

    @_guarded
    def remove(self, run_ids: list[str]) -> int:
        """Delete the runs' rows and their history in one transaction; returns how many history rows went."""
        self._refuse_running(run_ids)
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            history = 0
            for run_id in run_ids:
                self.connection.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
                history += self.connection.execute("DELETE FROM superseded WHERE run_id = ?", (run_id,)).rowcount
            self.connection.execute("COMMIT")
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        return history

    def _refuse_running(self, run_ids: list[str]) -> None:
        marks = ",".join("?" * len(run_ids))
        held = self.connection.execute(f"SELECT run_id, owner FROM runs WHERE status = 'running' AND run_id IN"
                                       f" ({marks}) AND lease_until >= ?", (*run_ids, time.time())).fetchone()
        if held and not _is_dead_local_process(held[1] or ""):
            raise UserError(f"run {held[0]} is being trained by runner {held[1]}; wait until it ends, or stop that"
                            " runner, then try again")

    @_guarded
    def history(self, run_id: str) -> list[dict]:
        """The earlier results of a run (superseded rows), oldest first."""
        return _history(self.connection, run_id)

    @_guarded
    def rows(self, kind: str | None = None) -> list[dict]:
        return _rows(self.path, self.connection, kind, set(ADDED_COLUMNS))

    def close(self) -> None:
        self.connection.close()


def _rows(path: Path, connection: sqlite3.Connection, kind: str | None, columns: set[str]) -> list[dict]:
    """Every row as one dict: the spec's fields and the result's side by side, and the spec whole under
    `spec` (what a run's identity and configuration are computed from, peftbench.identity)."""
    # A store written before claims existed has no `attempts` column: each of its runs was started once.
    # One written before versions has no `schema_version`, and a row claimed by such code holds NULL.
    attempts = "attempts" if "attempts" in columns else "1"
    version = f"coalesce(schema_version, {LEGACY_SCHEMA_VERSION})" if "schema_version" in columns \
        else str(LEGACY_SCHEMA_VERSION)
    query = (f"SELECT rowid, run_id, kind, suite, status, spec, result, error, finished_at, {attempts}, {version}"
             " FROM runs")
    params: tuple = ()
    if kind:
        query, params = query + " WHERE kind = ?", (kind,)
    rows = []
    for rowid, run_id, kind_, suite, status, spec, result, error, finished_at, tries, schema in connection.execute(
            query + " ORDER BY finished_at", params):
        try:
            spec_fields, result_fields = json.loads(spec), json.loads(result)
            problem = shape_problem(kind_, status, spec_fields, result_fields)
        except (TypeError, json.JSONDecodeError):
            problem = "its JSON does not parse"
        if problem:
            _skip(path, rowid, run_id, problem)
            continue
        rows.append({"run_id": run_id, "kind": kind_, "suite": suite, "status": status, "error": error,
                     "finished_at": finished_at, "attempts": tries, "schema_version": schema, **spec_fields,
                     **result_fields, "spec": spec_fields})
    return rows


_SKIPPED: set[tuple[str, int]] = set()  # (store, rowid) already named by this process


def _skip(path: Path, rowid: int, run_id: object, problem: str) -> None:
    """Name a row the reader cannot read, once per process, on stderr (stdout stays a command's answer), with
    the command that removes it (by rowid: a hand-edited run id may hold anything)."""
    if (str(path), rowid) in _SKIPPED:
        return
    _SKIPPED.add((str(path), rowid))
    print(f"warning: skipped run {json.dumps(run_id)} of the results store '{path}': {problem}, not a row this"
          f" peftbench reads; remove it with `sqlite3 {shlex.quote(str(path))} 'DELETE FROM runs WHERE rowid ="
          f" {rowid}'`", file=sys.stderr)


def _history(connection: sqlite3.Connection, run_id: str) -> list[dict]:
    if not connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'superseded'").fetchone():
        return []  # a store written before history was kept
    return [{"status": status, "finished_at": finished_at, "superseded_at": superseded_at, "reason": reason,
             "attempts": attempts, **json.loads(result)}
            for status, result, finished_at, attempts, superseded_at, reason in connection.execute(
                "SELECT status, result, finished_at, attempts, superseded_at, reason FROM superseded WHERE run_id = ?"
                " ORDER BY superseded_at", (run_id,))]


class Heartbeat:
    """Renews `owner`'s leases from a background thread every third of a lease, so a claim outlives a
    long model load, training step or evaluation; if the process dies, the beats stop and the leases lapse."""

    def __init__(self, path: Path, owner: str, lease_seconds: float):
        self.path, self.owner, self.lease_seconds = path, owner, lease_seconds
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="peftbench-heartbeat", daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()

    def _beat(self) -> None:
        store = Store(self.path)  # a SQLite connection belongs to the thread that opened it
        try:
            while not self.stopped.wait(self.lease_seconds / 3):
                try:
                    store.renew(self.owner, self.lease_seconds)
                except UserError:  # store busy past the timeout (or full): the next beat tries again
                    pass
        finally:
            store.close()


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot change the store. While a writer is active (its -wal file exists) the reader
    shares the writer's journal, read-only; a quiescent store is opened immutable, which creates no -wal or
    -shm file beside it and works in a read-only folder."""
    uri = path.resolve().as_uri()
    active = path.with_name(path.name + "-wal").exists()
    connection = sqlite3.connect(f"{uri}?mode=ro" if active else f"{uri}?mode=ro&immutable=1", uri=True, timeout=30)
    connection.execute("SELECT count(*) FROM sqlite_master").fetchone()  # fails here on a non-database file
    return connection


def _regular(path: Path) -> None:
    """A store is a regular file (or absent, for a writer to create): opening a FIFO blocks past every signal."""
    if path.exists() and not path.is_file():
        raise OSError(errno.EISDIR if path.is_dir() else errno.EINVAL, "not a regular file", str(path))


def _blocking_file(path: Path) -> Path | None:
    return next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)


def require_store(path: Path) -> None:
    """For commands that need stored runs: an absent store is a user error naming the fix."""
    if not path.exists():
        if blocker := _blocking_file(path):
            raise UserError(f"no results store at '{path}': '{blocker}' is a file, not a folder; pass --store PATH")
        raise UserError(f"no results store at '{path}'; run `peftbench run` first or pass --store PATH")


def read_rows(path: Path, kind: str | None = None) -> list[dict]:
    """Rows of an existing store, read without changing a byte of it; an absent store has none (and is not
    created by reading)."""
    if not path.exists():
        if blocker := _blocking_file(path):
            raise UserError(f"no results store at '{path}': '{blocker}' is a file, not a folder; pass --store PATH")
        return []
    with store_errors(path):
        _regular(path)
        connection = _open_read_only(path)
        try:
            columns = _check_schema(path, connection, writable=False)
            return _rows(path, connection, kind, columns)
        finally:
            connection.close()


def read_history(path: Path, run_id: str) -> list[dict]:
    """A run's superseded results (Store.supersede), read without changing the store."""
    if not path.exists():
        return []
    with store_errors(path):
        connection = _open_read_only(path)
        try:
            _check_schema(path, connection, writable=False)
            return _history(connection, run_id)
        finally:
            connection.close()


def find_run(run_id: str, store: Path) -> dict:
    """The stored row of a run id (or of a unique prefix of one, as `git` takes commits)."""
    require_store(store)
    matches = [row for row in read_rows(store) if row["run_id"].startswith(run_id)]
    if len(matches) != 1:
        problem = "no run" if not matches else f"{len(matches)} runs"
        raise UserError(f"{problem} in '{store}' with an id starting '{run_id}'; see `peftbench results` for the ids")
    return matches[0]
