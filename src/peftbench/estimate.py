"""How long a grid will take on this device, for `peftbench run --dry-run`. Each run is estimated at most
(every epoch run; early stopping and budgets only shorten it) from, in order of preference:

1. **stored runs** of the same model on the same kind of device (cpu / cuda), preferring the same task and
   method spec, then the same task, then any: their seconds per training example and epoch
   (`train_seconds / (n_train × epochs run)`) and their seconds per evaluated row (the rest of their wall
   time over validation rows × epochs run + test rows), medians over the runs found;
2. otherwise a **heuristic**: training costs 6 FLOPs per non-embedding parameter and token and evaluation 2,
   at this device's matrix-multiply rate (measured here for a fraction of a second) times CALIBRATION, with
   tokens per example from the data (about 4 characters a token, at most max_input_length) or, for hub data
   not downloaded, max_input_length.

CALIBRATION: on the committed offline store (docs/results/offline.db: MiniLM-L6 and SmolLM2-135M on one CPU
core), training ran 1.6-2.6 times (median 2) faster than that FLOP count at a one-thread matmul rate measured
on the same machine (frozen weights need no weight gradients; chars/4 overcounts tokens). So expect the
heuristic to be off by a factor of 2-3 either way, and the stored-run estimate to be close for the same
model, task and device (contention aside)."""

import functools
import statistics
import time
from dataclasses import dataclass

import torch

CALIBRATION = 2.0
CHARS_PER_TOKEN = 4
SAMPLE_ROWS = 200  # rows read to estimate a task's tokens per example


@dataclass
class Basis:
    """Per model: the stored runs an estimate rests on, or the heuristic's inputs."""

    model: str
    stored: int = 0
    flops: float | None = None

    def describe(self, device: str) -> str:
        if self.stored:
            return f"{self.model}: from {self.stored} stored {device} run(s) of this model"
        return (f"{self.model}: no stored {device} runs, so a heuristic: 6 FLOPs per non-embedding parameter and"
                f" training token at {self.flops / 1e9:,.1f} GFLOP/s (this device's measured matmul rate) ×"
                f" {CALIBRATION:g} (calibrated on stored CPU runs; expect a factor of 2-3 either way)")


def device_kind(row: dict) -> str:
    return str((row.get("provenance") or {}).get("device", "")).split(":")[0]


@functools.cache
def non_embedding_parameters(model: str) -> int:
    """Parameters that multiply every token (the embedding table is a lookup), counted on the meta device."""
    from peftbench.models import meta_model

    built, _ = meta_model(model)
    return sum(p.numel() for p in built.parameters()) - built.get_input_embeddings().weight.numel()


def matmul_flops(device: torch.device) -> float:
    """FLOP/s of a 512×512 fp32 matrix product on `device`, over about 0.3 s."""
    a, b = torch.randn(512, 512, device=device), torch.randn(512, 512, device=device)
    (a @ b).sum().item()  # warm-up
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < 0.3:
        a @ b
        count += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return count * 2 * 512**3 / (time.perf_counter() - started)


def _rates(spec: dict, stored: list[dict], val_rows: int) -> tuple[float, float, int, float] | None:
    """(seconds per training example-epoch, seconds per evaluated row, runs used, share of their epochs they
    ran before early stopping or a cap ended them) from stored runs."""
    same_model = [r for r in stored if r["model"] == spec["model"] and r.get("train_seconds") and r.get("curve")]
    for narrow in (lambda r: r["task"] == spec["task"] and r["method_spec"] == spec["method_spec"],
                   lambda r: r["task"] == spec["task"], lambda r: True):
        chosen = [r for r in same_model if narrow(r)]
        if chosen:
            break
    else:
        return None
    train = [r["train_seconds"] / (r["n_train"] * len(r["curve"])) for r in chosen]
    evaluated = [max(r["wall_s"] - r["train_seconds"], 0) / ((r.get("metrics") or {}).get("n_test", 0)
                                                             + val_rows * len(r["curve"]) or 1) for r in chosen]
    share = [len(r["curve"]) / r["epochs"] for r in chosen if r.get("epochs")] or [1.0]
    return statistics.median(train), statistics.median(evaluated), len(chosen), min(statistics.median(share), 1.0)


def _tokens_per_example(grid, spec: dict) -> float:
    limit = spec["max_input_length"] + spec["max_target_length"]
    splits = grid.splits.get(spec["task"])
    if splits is None:
        return limit
    task = grid.tasks[spec["task"]]
    rows = splits.train[:SAMPLE_ROWS]
    lengths = [min(limit, (len(task.prompt(row)) + len(str(task.target(row)))) / CHARS_PER_TOKEN + 2) for row in rows]
    return sum(lengths) / len(lengths) if lengths else limit


def _rows(grid, spec: dict) -> tuple[int, int]:
    splits = grid.splits.get(spec["task"])
    return (len(splits.val), len(splits.test)) if splits else (spec["val_cap"], spec["test_cap"])


@dataclass
class Estimate:
    """Seconds per planned run (the grid's runs, then those waiting in stages, every trial at full length; None where the
    training set's size is not known before a download): at most (every epoch), and typically (the stored
    runs' share of epochs before early stopping; the same as at most for the heuristic)."""

    at_most: list[float | None]
    typical: list[float | None]
    basis: list[str]


def estimate(grid, stored: list[dict], device: torch.device) -> Estimate:
    kind = device.type
    stored = [r for r in stored if r.get("status") == "finished" and r.get("kind") == "train" and device_kind(r) == kind]
    bases: dict[str, Basis] = {}
    flops: list[float] = []

    def seconds(spec: dict, trains: bool) -> tuple[float | None, float | None]:
        if trains and spec.get("n_train") is None:
            return None, None  # a hub task's whole training set: its size is known after the download
        basis = bases.setdefault(spec["model"], Basis(spec["model"]))
        val_rows, test_rows = _rows(grid, spec)
        epochs = spec.get("epochs", 0) if trains else 0
        rates = _rates(spec, stored, val_rows)
        if rates is not None:
            per_example, per_row, used, share = rates
            basis.stored = max(basis.stored, used)
        else:
            if not flops:
                flops.append(matmul_flops(device))
            basis.flops, share = flops[0], 1.0
            parameters = non_embedding_parameters(spec["model"])
            rate = flops[0] * CALIBRATION
            tokens = _tokens_per_example(grid, spec)
            per_example, per_row = 6 * parameters * tokens / rate, 2 * parameters * tokens / rate

        def total(epochs_run: float) -> float:
            training = per_example * spec["n_train"] * epochs_run if trains else 0.0
            if spec.get("budget"):
                training = min(training, spec["budget"]["seconds"])
            return training + per_row * (val_rows * epochs_run + test_rows)

        return total(epochs), total(epochs * share)

    pairs = []
    for run in grid.runs:
        pairs.append(seconds(run.spec, run.procedure.trains) if run.procedure.uses_model else (0.0, 0.0))
    pairs += [seconds(waiting, True) for stage in grid.stages for waiting in stage.waiting()]
    return Estimate([a for a, _ in pairs], [t for _, t in pairs], [basis.describe(kind) for basis in bases.values()])
