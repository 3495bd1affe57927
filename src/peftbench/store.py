"""SQLite results store: one row per run, keyed by the hash of its normalised spec. Writes are single
transactions in WAL mode, so a row is there whole or not at all."""

import json
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,          -- train | baseline
    suite TEXT NOT NULL,
    status TEXT NOT NULL,        -- finished | failed
    spec TEXT NOT NULL,          -- JSON: the normalised run spec
    result TEXT NOT NULL,        -- JSON: metrics and measurements
    error TEXT,
    finished_at REAL NOT NULL
)
"""


class Store:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.connection = sqlite3.connect(path, timeout=30)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute(SCHEMA)
        self.connection.commit()

    def finished_ids(self) -> set[str]:
        return {row[0] for row in self.connection.execute("SELECT run_id FROM runs WHERE status = 'finished'")}

    def put(self, run_id: str, kind: str, suite: str, status: str, spec: dict, result: dict,
            error: str | None = None) -> None:
        with self.connection:
            self.connection.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, kind, suite, status, json.dumps(spec, sort_keys=True, default=str),
                 json.dumps(result, sort_keys=True, default=str), error, time.time()))

    def rows(self, kind: str | None = None) -> list[dict]:
        query = "SELECT run_id, kind, suite, status, spec, result, error, finished_at FROM runs"
        params: tuple = ()
        if kind:
            query, params = query + " WHERE kind = ?", (kind,)
        rows = []
        for run_id, kind_, suite, status, spec, result, error, finished_at in self.connection.execute(
                query + " ORDER BY finished_at", params):
            rows.append({"run_id": run_id, "kind": kind_, "suite": suite, "status": status, "error": error,
                         "finished_at": finished_at, **json.loads(spec), **json.loads(result)})
        return rows

    def close(self) -> None:
        self.connection.close()


def read_rows(path: Path, kind: str | None = None) -> list[dict]:
    """Rows of an existing store; an absent store has none (and is not created by reading)."""
    if not path.exists():
        return []
    store = Store(path)
    try:
        return store.rows(kind)
    finally:
        store.close()
