"""Crash safety, concurrency and the Ray executor: runners started as real processes are killed,
interrupted and raced on one store, and the store must come out whole."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_json, write_suite

STATUSES = {"running", "finished", "failed", "interrupted"}
FINISHED_KEYS = {"score", "metrics", "primary_metric", "provenance", "data_digest", "wall_s"}


def _start(suite: Path, store: Path, *flags: str, lease: float = 2, command: str = "run") -> subprocess.Popen:
    env = {**os.environ, "PEFTBENCH_LEASE_SECONDS": str(lease)}
    return subprocess.Popen([sys.executable, "-m", "peftbench.cli", command, str(suite), "--store", str(store),
                             "--json", *flags], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rows(store: Path) -> dict[str, dict]:
    """Every row, parsed; fails on a row that is not whole."""
    if not store.exists():
        return {}
    with sqlite3.connect(store, timeout=30) as connection:
        if not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchone():
            return {}  # the runner has created the file but not yet the table
        found = connection.execute("SELECT run_id, status, spec, result, error, finished_at, owner, attempts"
                                   " FROM runs").fetchall()
    rows = {}
    for run_id, status, spec, result, error, finished_at, owner, attempts in found:
        assert run_id not in rows and status in STATUSES and owner and attempts >= 1 and finished_at > 0
        row = {"status": status, "spec": json.loads(spec), "result": json.loads(result), "error": error,
               "owner": owner, "attempts": attempts}
        if status == "finished":
            assert FINISHED_KEYS <= set(row["result"]) and error is None
        rows[run_id] = row
    return rows


def _finished(store: Path) -> dict[str, dict]:
    return {run_id: row for run_id, row in _rows(store).items() if row["status"] == "finished"}


def _wait_until(process: subprocess.Popen, reached, timeout: float = 120) -> None:
    """Poll until `reached(process)`; fail if the runner exits first."""
    deadline = time.monotonic() + timeout
    while not reached(process):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "timed out waiting for the runner"
        time.sleep(0.05)


def _running_train_run(store: Path, process: subprocess.Popen) -> bool:
    return any(row["status"] == "running" and row["owner"].split(":")[1] == str(process.pid)
               and row["spec"]["method"] != "majority" for row in _rows(store).values())


def test_sigkill_at_any_point_loses_nothing_and_a_rerun_resumes(tmp_path):
    suite = write_suite(tmp_path / "kill.json", methods=["lora", "ia3", "bitfit"])  # + majority: 4 runs
    store = tmp_path / "r.db"
    kill_points = [
        lambda process: len(_finished(store)) >= 1,
        lambda process: _running_train_run(store, process),  # mid-run: claimed, not ended
        lambda process: len(_finished(store)) >= 3,
    ]
    kept: dict[str, dict] = {}
    for reached in kill_points:
        process = _start(suite, store)
        _wait_until(process, reached)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        finished = _finished(store)
        assert all(finished[run_id] == row for run_id, row in kept.items())  # none lost, none rewritten
        kept = finished
    last = _start(suite, store)
    out, err = last.communicate(timeout=300)
    assert last.returncode == 0, err
    assert json.loads(out)["counts"]["skipped"] == len(kept)  # only the unfinished runs were run again
    rows = _rows(store)
    assert len(rows) == 4 and all(row["status"] == "finished" for row in rows.values())
    assert all(rows[run_id] == row for run_id, row in kept.items())
    assert max(row["attempts"] for row in rows.values()) >= 2  # the run killed mid-way was taken over


def test_two_runners_on_one_store_train_each_run_once(tmp_path):
    suite = write_suite(tmp_path / "race.json", methods=["lora", "ia3", "bitfit", "ln_tuning"])  # 5 runs
    store = tmp_path / "r.db"
    runners = [_start(suite, store, lease=10) for _ in range(2)]
    outputs = [runner.communicate(timeout=300) for runner in runners]
    assert [runner.returncode for runner in runners] == [0, 0], [err for _, err in outputs]
    rows = _rows(store)
    assert len(rows) == 5 and all(row["status"] == "finished" and row["attempts"] == 1 for row in rows.values())
    assert sum(json.loads(out)["counts"].get("finished", 0) for out, _ in outputs) == 5


def test_sigint_stores_the_run_as_interrupted_and_a_rerun_finishes_it(tmp_path):
    suite = write_suite(tmp_path / "int.json", scales=[32])  # 8 steps; SIGINT lands as the model loads
    store = tmp_path / "r.db"
    process = _start(suite, store)
    _wait_until(process, lambda runner: _running_train_run(store, runner))
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130 and out == ""
    assert err.strip().startswith("interrupted: 1 run(s) stored as interrupted") and len(err.strip().splitlines()) == 1
    interrupted = [row for row in _rows(store).values() if row["spec"]["method"] == "lora"]
    assert interrupted[0]["status"] == "interrupted"
    # where it stopped: at the next step, or before the run's next phase (peftbench.execution.Phases)
    assert re.match(r"stopped by SIGINT (after training step|before )", interrupted[0]["error"])
    again = run_json("run", suite, "--store", store, "--json")
    assert again["counts"] == {"skipped": 1, "finished": 1}
    rerun = next(row for row in _rows(store).values() if row["spec"]["method"] == "lora")
    assert rerun["status"] == "finished" and rerun["attempts"] == 2


@pytest.mark.xdist_group("ray")  # one local Ray cluster at a time on the two cores
def test_ray_executor_gives_the_rows_of_the_local_one(tmp_path):
    suite = write_suite(tmp_path / "same.json", methods=["lora", "ia3"])
    local = run_json("run", suite, "--store", tmp_path / "local.db", "--json")
    process = _start(suite, tmp_path / "ray.db", "--executor", "ray", "--cpus-per-run", "1")
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    on_ray = json.loads(out)
    assert on_ray["counts"] == local["counts"] == {"skipped": 0, "finished": 3}
    local_rows = {row["run_id"]: row for row in local["runs"]}
    ray_rows = {row["run_id"]: row for row in on_ray["runs"]}
    assert local_rows.keys() == ray_rows.keys()
    for run_id, row in local_rows.items():
        assert ray_rows[run_id]["status"] == row["status"] == "finished"
        assert ray_rows[run_id]["score"] == pytest.approx(row["score"], abs=0.07)  # ≤ 1 of 16 test examples
        assert ray_rows[run_id]["data_digest"] == row["data_digest"]


@pytest.mark.xdist_group("ray")  # one local Ray cluster at a time on the two cores
def test_a_ray_run_whose_worker_dies_is_retried_once(tmp_path):
    import ray

    from peftbench.suite_files import load_suite
    from peftbench.executors import execute_on_worker, ray_executor
    from peftbench.planning import plan
    from peftbench.runner import execute
    from peftbench.store import Store

    def die_first(run, task_data, device_choice):
        """lora's worker dies on its first attempt, ia3's on every attempt."""
        died_before = tmp_path / run.spec["method"]
        if run.spec["method"] == "ia3" or not died_before.exists():
            died_before.touch()
            os._exit(1)
        return execute_on_worker(run, task_data, device_choice)

    class Steps:  # progress as the runner reports it: under Ray the workers' steps reach the driver too
        def __init__(self):
            self.seen, self.outcomes = {}, []

        def start(self, runs, skipped, suite, waiting=0):
            pass

        def step(self, run, done, total, loss=None, phase=None):
            if phase is None:  # the training steps; the other phases are named without counts
                self.seen.setdefault(run.spec["method"], []).append((done, total, loss))

        def ended(self, run, status, result, error):
            self.outcomes.append((run.spec["method"], status))

    grid = plan(load_suite(str(write_suite(tmp_path / "die.json", methods=["lora", "ia3"], baselines=[]))))
    store = Store(tmp_path / "r.db")
    steps = Steps()
    with ray_executor(None, "cpu", cpus_per_run=1, gpus_per_run=0) as executor:
        executor.task = ray.remote(max_retries=0)(die_first)  # submit sets each run's resources
        counts = execute(grid, store, executor, steps)
    total = grid.runs[0].spec["epochs"] * 2  # 16 examples in batches of 8, per epoch
    assert (total, total) in {(done, all_) for done, all_, _ in steps.seen["lora"]}  # its last step arrived
    assert all(loss is None or loss > 0 for _, _, loss in steps.seen["lora"])
    assert sorted(steps.outcomes) == [("ia3", "failed"), ("lora", "finished")]
    rows = {row["method"]: row for row in store.rows()}
    store.close()
    assert counts == {"skipped": 0, "finished": 1, "failed": 1}
    assert rows["lora"]["status"] == "finished" and rows["lora"]["attempts"] == 2
    assert rows["ia3"]["status"] == "failed" and rows["ia3"]["attempts"] == 2
    assert rows["ia3"]["error"].startswith("WorkerCrashedError on both attempts")
