"""Training a stored run again (`peftbench run SUITE --rerun RUN_ID...`) and forgetting runs (`peftbench rm
RUN_ID...`). Every id is resolved (a unique prefix works, as in `show`) before the store is touched, so a
mistake changes nothing. A rerun keeps the earlier result as history (store.Store.supersede) and deletes its
weights, which the new run's replace; `rm` deletes the rows, their history and their weights' folders."""

import shutil
from pathlib import Path

from peftbench.artifacts import weights_root
from peftbench.errors import UserError
from peftbench.store import Store, find_run, read_rows

RERUN_REASON = "rerun"


def _resolved(ids: list[str], store_path: Path) -> list[dict]:
    rows = {}
    for run_id in ids:
        row = find_run(run_id, store_path)
        rows[row["run_id"]] = row
    return list(rows.values())


def _delete_weights(store_path: Path, run_ids: list[str]) -> int:
    """Remove the runs' weights folders; returns the bytes freed."""
    freed = 0
    for run_id in run_ids:
        folder = weights_root(store_path) / run_id
        if folder.is_dir():
            freed += sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
            shutil.rmtree(folder)
    return freed


def rerun_ids(ids: list[str], planned: set[str], suite: str, store_path: Path) -> list[str]:
    """The full ids of the stored runs `ids` names, each of which the planned grid (`planned`, of `suite`) must
    hold; a UserError naming the fix otherwise."""
    if not store_path.exists():
        raise UserError(f"--rerun: no results store at '{store_path}'; nothing to run again (drop --rerun)")
    rows = _resolved(ids, store_path)
    for row in rows:
        if row["run_id"] not in planned:
            raise UserError(f"--rerun: run {row['run_id']} is not a run of the grid of '{suite}' (it was filed"
                            f" under '{row['suite']}'); run its own suite: `peftbench run SUITE --rerun"
                            f" {row['run_id'][:8]}` with the flags that planned it")
    return [row["run_id"] for row in rows]


def supersede(store: Store, run_ids: list[str]) -> None:
    """Keep the runs' stored results as history and free their ids to be trained again."""
    store.supersede(run_ids, RERUN_REASON)
    _delete_weights(store.path, run_ids)


def remove(ids: list[str], store_path: Path) -> dict:
    """Delete the runs `ids` names from the store (rows and history) and their weights' folders."""
    run_ids = [row["run_id"] for row in _resolved(ids, store_path)]
    store = Store(store_path)
    try:
        history = store.remove(run_ids)
    finally:
        store.close()
    freed = _delete_weights(store_path, run_ids)
    return {"removed": run_ids, "history_rows": history, "weights_bytes_freed": freed,
            "runs_left": len(read_rows(store_path))}
