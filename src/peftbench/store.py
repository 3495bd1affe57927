"""SQLite results store: one row per run, keyed by the hash of its normalised spec. Every write is one
statement in WAL mode, so a row is there whole or not at all, even if the process is killed.

Runners that share a store split the work by claiming runs: a claim sets a run's row to `running`
with the runner's id and a lease expiry. The runner's heartbeat renews its leases while it works;
another runner skips a run under a live lease and takes over one whose lease ran out (its runner
died). A finished row is never overwritten."""

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Self

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
    attempts INTEGER NOT NULL DEFAULT 1  -- how many times a runner has started it
)
"""
# Stores written before runs were claimed lack these columns; they are added on opening.
CLAIM_COLUMNS = {"owner": "TEXT", "lease_until": "REAL", "attempts": "INTEGER NOT NULL DEFAULT 1"}

# Take the run if nobody has it, if its claim lapsed (dead runner) or is our own (a retry), or if it
# failed or was interrupted before this runner started (a concurrent runner's failure is not retried).
CLAIM = """
INSERT INTO runs (run_id, kind, suite, status, spec, result, error, finished_at, owner, lease_until)
VALUES (:run_id, :kind, :suite, 'running', :spec, '{}', NULL, :now, :owner, :lease_until)
ON CONFLICT (run_id) DO UPDATE SET
    suite = excluded.suite, status = 'running', result = '{}', error = NULL, finished_at = excluded.finished_at,
    owner = excluded.owner, lease_until = excluded.lease_until, attempts = attempts + 1
WHERE (status = 'running' AND (lease_until < :now OR owner = :owner))
   OR (status IN ('failed', 'interrupted') AND finished_at < :since)
"""


class Store:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Autocommit: each statement is its own transaction; the one multi-statement change says BEGIN.
        self.connection = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("BEGIN IMMEDIATE")  # two runners opening an old store add columns once
        self.connection.execute(SCHEMA)
        present = {row[1] for row in self.connection.execute("PRAGMA table_info(runs)")}
        for name, declaration in CLAIM_COLUMNS.items():
            if name not in present:
                self.connection.execute(f"ALTER TABLE runs ADD COLUMN {name} {declaration}")
        self.connection.execute("COMMIT")

    def finished_ids(self) -> set[str]:
        return {row[0] for row in self.connection.execute("SELECT run_id FROM runs WHERE status = 'finished'")}

    def claim(self, run_id: str, kind: str, suite: str, spec: dict, owner: str, since: float,
              lease_seconds: float) -> bool:
        """Claim a run for `owner` (a runner started at time `since`); False if it is finished or taken."""
        now = time.time()
        cursor = self.connection.execute(CLAIM, {
            "run_id": run_id, "kind": kind, "suite": suite, "spec": json.dumps(spec, sort_keys=True, default=str),
            "now": now, "owner": owner, "lease_until": now + lease_seconds, "since": since})
        return cursor.rowcount == 1

    def end(self, run_id: str, owner: str, status: str, result: dict, error: str | None = None) -> bool:
        """Store how a claimed run ended; False (nothing written) if `owner` no longer holds the claim."""
        cursor = self.connection.execute(
            "UPDATE runs SET status = ?, result = ?, error = ?, finished_at = ?, lease_until = NULL"
            " WHERE run_id = ? AND owner = ? AND status = 'running'",
            (status, json.dumps(result, sort_keys=True, default=str), error, time.time(), run_id, owner))
        return cursor.rowcount == 1

    def renew(self, owner: str, lease_seconds: float) -> None:
        self.connection.execute("UPDATE runs SET lease_until = ? WHERE owner = ? AND status = 'running'",
                                (time.time() + lease_seconds, owner))

    def abandon(self, owner: str, reason: str) -> int:
        """Mark every run `owner` still holds as interrupted; returns how many."""
        return self.connection.execute(
            "UPDATE runs SET status = 'interrupted', error = ?, finished_at = ?, lease_until = NULL"
            " WHERE owner = ? AND status = 'running'", (reason, time.time(), owner)).rowcount

    def running_elsewhere(self, owner: str) -> set[str]:
        """Runs claimed by other runners, live or lapsed."""
        return {row[0] for row in self.connection.execute(
            "SELECT run_id FROM runs WHERE status = 'running' AND owner != ?", (owner,))}

    def rows(self, kind: str | None = None) -> list[dict]:
        query = "SELECT run_id, kind, suite, status, spec, result, error, finished_at, attempts FROM runs"
        params: tuple = ()
        if kind:
            query, params = query + " WHERE kind = ?", (kind,)
        rows = []
        for run_id, kind_, suite, status, spec, result, error, finished_at, attempts in self.connection.execute(
                query + " ORDER BY finished_at", params):
            rows.append({"run_id": run_id, "kind": kind_, "suite": suite, "status": status, "error": error,
                         "finished_at": finished_at, "attempts": attempts, **json.loads(spec), **json.loads(result)})
        return rows

    def close(self) -> None:
        self.connection.close()


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
                except sqlite3.OperationalError:  # store busy past the timeout: the next beat tries again
                    pass
        finally:
            store.close()


def read_rows(path: Path, kind: str | None = None) -> list[dict]:
    """Rows of an existing store; an absent store has none (and is not created by reading)."""
    if not path.exists():
        return []
    store = Store(path)
    try:
        return store.rows(kind)
    finally:
        store.close()
