"""Where runs execute: one after another in this process, or as Ray tasks spread over a cluster. Both
call execution.execute_one and hand each outcome back to the driver, which alone writes the store.

An executor's `run(runs, plan, claim, stop, on_step)` claims each run (skipping those `claim` refuses)
just before starting it, stops starting runs once `stop` is set, yields (run, outcome) as runs end, and
reports each run's steps to `on_step(run, steps done, steps in all, current loss)` and the start of each of its
other phases to `on_step(run, None, None, None, phase)` (peftbench.execution.Phases)."""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from threading import Event
from typing import Protocol

import torch

from peftbench.errors import UserError
from peftbench.interrupts import check_stop
from peftbench.execution import Outcome, execute_one, pick_device
from peftbench.planning import Plan, Run
from peftbench.sharding import resources

Claim = Callable[[Run], bool]
OnStep = Callable[..., None]  # run, steps done, steps in all, loss[, phase]
PROGRESS_ACTOR = "peftbench-progress"  # the driver's progress mailbox, named within its Ray namespace
PROGRESS_EVERY = 0.5  # seconds between a worker's progress messages


class Executor(Protocol):
    def run(self, runs: list[Run], plan: Plan, claim: Claim, stop: Event,
            on_step: OnStep) -> Iterator[tuple[Run, Outcome]]: ...


class LocalExecutor:
    """One run at a time in this process; a stop request ends the current run after its training step."""

    def __init__(self, device: torch.device):
        self.device = device

    def run(self, runs, plan, claim, stop, on_step):
        for run in runs:
            if stop.is_set():
                return
            if not claim(run):
                continue
            on_step(run, 0, None, None)  # shows which run is loading before its first step

            def step(done: int | None, total: int | None, loss: float | None = None, phase: str | None = None,
                     run: Run = run) -> None:
                on_step(run, done, total, loss, phase)
                check_stop(f"before {phase}" if phase else f"after training step {done} of {total}")

            task = run.spec["task"]
            yield run, execute_one(run, plan.tasks[task], plan.splits[task], self.device, step)


class ProgressBox:
    """A Ray actor holding workers' progress messages until the driver collects them."""

    def __init__(self):
        self.messages: list[tuple] = []

    def put(self, message: tuple) -> None:
        self.messages.append(message)

    def drain(self) -> list[tuple]:
        messages, self.messages = self.messages, []
        return messages


def _progress_sender(run: Run) -> Callable | None:
    """The worker's step callback: at most every PROGRESS_EVERY seconds (and at the last step) a message to
    the driver's ProgressBox; None when there is none (a worker started some other way)."""
    import ray

    try:
        box = ray.get_actor(PROGRESS_ACTOR)
    except ValueError:
        return None
    last = [0.0]

    def send(done: int | None, total: int | None, loss: float | None = None, phase: str | None = None) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY or done == total or phase:
            last[0] = now
            box.put.remote((run.run_id, done, total, loss, phase))  # fire and forget: progress never slows a step

    return send


def execute_on_worker(run: Run, task_data: tuple, device_choice: str) -> Outcome:
    task, splits = task_data
    return execute_one(run, task, splits, pick_device(device_choice), _progress_sender(run))


class RayExecutor:
    """Each run is a Ray task holding `cpus_per_run` CPUs and `gpus_per_run` GPUs (a sharded run at least one
    GPU, or CPU, per process). A task whose worker died (killed, out of host memory, node lost) is claimed and
    started once more before it counts as failed."""

    def __init__(self, device_choice: str, cpus_per_run: float, gpus_per_run: float):
        import ray

        self.device_choice, self.cpus_per_run, self.gpus_per_run = device_choice, cpus_per_run, gpus_per_run
        # max_retries=0: a retry is started here, so that it is claimed and counted in the store.
        self.task = ray.remote(max_retries=0)(execute_on_worker)  # a RemoteFunction: each run sets its resources

    def run(self, runs, plan, claim, stop, on_step):
        import ray

        # Each task's data goes to the object store once, not once per run.
        data = {name: ray.put((plan.tasks[name], plan.splits[name])) for name in plan.tasks}

        def submit(run: Run):
            # A sharded run holds a GPU (or CPU) per process (peftbench.sharding).
            request = resources(run.spec, self.cpus_per_run, self.gpus_per_run)
            return self.task.options(**request).remote(run, data[run.spec["task"]], self.device_choice)

        box = ray.remote(num_cpus=0)(ProgressBox).options(name=PROGRESS_ACTOR).remote()
        in_flight = {submit(run): run for run in runs if not stop.is_set() and claim(run)}
        by_id = {run.run_id: run for run in in_flight.values()}
        for run in in_flight.values():
            on_step(run, 0, None, None)
        retried: set[str] = set()
        try:
            yield from self._collect(in_flight, by_id, retried, submit, claim, stop, on_step, box)
        finally:
            ray.kill(box)

    def _collect(self, in_flight, by_id, retried, submit, claim, stop, on_step, box):
        import ray

        while in_flight:
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)  # wake up to notice a stop
            running = {run.run_id for run in in_flight.values()}
            for run_id, steps, total, loss, phase in ray.get(box.drain.remote()):
                if run_id in running:  # a late message of a run that has ended is dropped
                    on_step(by_id[run_id], steps, total, loss, phase)
            for ref in done:
                run = in_flight.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as error:
                    if isinstance(getattr(error, "cause", None), UserError):
                        raise error.cause from None
                    if stop.is_set():
                        outcome = ("interrupted", {}, "stopped by a signal")
                    elif run.run_id in retried or not claim(run):
                        outcome = ("failed", {}, f"{type(error).__name__} on both attempts: {error}")
                    else:
                        retried.add(run.run_id)
                        in_flight[submit(run)] = run
                        continue
                yield run, outcome
            if stop.is_set():
                for ref in in_flight:
                    ray.cancel(ref)
                return


@contextmanager
def ray_executor(address: str | None, device_choice: str, cpus_per_run: float,
                 gpus_per_run: float | None) -> Iterator[RayExecutor]:
    """Join the Ray cluster at `address`, or start a local one for the call (stopped at the end).
    Without --gpus-per-run a run takes one GPU if the cluster has any and the device is not cpu."""
    import ray

    # Worker output would land on the driver's stdout and spoil --json; outcomes carry the errors.
    ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, logging_level="warning")
    try:
        if gpus_per_run is None:
            gpus_per_run = 1 if device_choice != "cpu" and ray.cluster_resources().get("GPU") else 0
        yield RayExecutor(device_choice, cpus_per_run, gpus_per_run)
    finally:
        ray.shutdown()
