"""Driving a grid: every unfinished run of a plan claimed in the store, handed to an executor, and stored as
it ends, under a heartbeat that renews the claims' leases and signal handlers that stop the grid cleanly.
Planning is peftbench.planning, one run peftbench.execution, where runs execute peftbench.executors."""

import os
import signal
import time
from collections import Counter
from typing import TYPE_CHECKING

from peftbench.artifacts import save as save_weights
from peftbench.errors import parse_number
from peftbench.execution import TENSORS_KEY, run_manifest
from peftbench.interrupts import deferred, requested, stop_on_signals
from peftbench.planning import Plan, Run
from peftbench.store import Heartbeat, Store, runner_id

if TYPE_CHECKING:
    from peftbench.executors import Executor


class GridInterrupted(Exception):
    """A SIGINT or SIGTERM stopped the grid; the message says how many runs were stored as interrupted."""


MIN_LEASE_SECONDS = 1.0  # the heartbeat renews every third of a lease: shorter ones lapse between beats
MAX_LEASE_SECONDS = 7 * 24 * 3600.0  # a week: longer is a claim that never lapses (and overflows the heartbeat's timer)


def lease_seconds() -> float:
    """How long a claim lasts without renewal: a rerun after a crash waits at most this long for the
    dead runner's claims. Short in tests (PEFTBENCH_LEASE_SECONDS)."""
    text = os.environ.get("PEFTBENCH_LEASE_SECONDS", "30")
    return parse_number(text, "PEFTBENCH_LEASE_SECONDS", minimum=MIN_LEASE_SECONDS, maximum=MAX_LEASE_SECONDS,
                        fix="set it to a number of seconds such as 30 (the default), or unset it")


def execute(plan_: Plan, store: Store, executor: "Executor", progress=None) -> dict[str, int]:
    """Run every unfinished run of the plan on `executor` (see peftbench.executors), claiming each in
    the store first and storing each as it ends; a failing run is stored as failed and the grid goes
    on. Runs another runner holds are waited for, and taken over if its lease lapses. Returns counts of
    finished, failed and skipped runs; raises GridInterrupted after a SIGINT. `progress` (a
    peftbench.progress.GridProgress) hears of the grid's start, every step and every run's end."""
    owner = runner_id()
    since, lease = time.time(), lease_seconds()
    done = store.finished_ids()
    todo = [run for run in plan_.runs if run.run_id not in done]
    counts = Counter(skipped=len(plan_.runs) - len(todo))
    if progress:
        stored = store.rows("train") if plan_.stages else []
        progress.start(todo, counts["skipped"], plan_.suite.name,
                       waiting=sum(stage.remaining(stored) for stage in plan_.stages))

    def claim(run: Run) -> bool:
        return store.claim(run.run_id, run.kind, plan_.suite.name, run.spec, owner, since, lease)

    def on_step(run: Run, step: int | None, total: int | None, loss: float | None = None,
                phase: str | None = None) -> None:
        if progress:
            progress.step(run, step, total, loss, phase)

    def run_all(runs: list[Run]) -> None:
        while runs and not stop.is_set():
            for run, (status, result, error) in executor.run(runs, plan_, claim, stop, on_step):
                if status == "finished" and plan_.usd_per_hour is not None:
                    result["cost_usd"] = result["wall_s"] * plan_.usd_per_hour / 3600
                if tensors := result.pop(TENSORS_KEY, None):  # written before the row, which then points at them
                    result["weights"] = save_weights(store.path, run.run_id, tensors,
                                                     run_manifest(run, plan_.tasks[run.spec["task"]], result))
                if store.end(run.run_id, owner, status, result, error):
                    counts[status] += 1
                if progress:
                    progress.ended(run, status, result, error)
            held = store.running_elsewhere(owner)
            runs = [run for run in runs if run.run_id in held]
            if runs:
                if progress:
                    progress.waiting(runs)
                stop.wait(lease / 3)  # until their runners end them or their leases lapse

    with stop_on_signals() as stop, Heartbeat(store.path, owner, lease):
        try:
            run_all(todo)
            planned = {run.run_id for run in plan_.runs}
            while plan_.stages and not stop.is_set():
                # Runs have ended (here or in another runner): the stages may now say what comes next.
                rows = store.rows("train")
                later = list({run.run_id: run for stage in plan_.stages for run in stage.next_runs(rows)
                              if run.run_id not in planned}.values())
                if not later:
                    break
                planned |= {run.run_id for run in later}
                plan_.runs += later
                done = store.finished_ids()
                todo = [run for run in later if run.run_id not in done]
                counts["skipped"] += len(later) - len(todo)
                if progress:
                    progress.more(todo, len(later) - len(todo))
                run_all(todo)
        finally:
            # Nothing this runner claimed stays `running` after it leaves, whatever made it leave.
            reason = (f"stopped by {signal.Signals(requested.signal).name}" if stop.is_set()
                      else "the runner stopped before this run ended")
            with deferred():
                if abandoned := store.abandon(owner, reason):
                    counts["interrupted"] += abandoned
    if stop.is_set():
        raise GridInterrupted(f"interrupted: {counts['interrupted']} run(s) stored as interrupted,"
                              f" {counts['finished']} finished; run the same command again to resume")
    return dict(counts)
