"""Sharded training of one run over the devices of one machine with PyTorch FSDP2
(`torch.distributed.fsdp.fully_shard`, https://docs.pytorch.org/docs/stable/distributed.fsdp.fully_shard.html),
chosen by the suite key `sharding: {strategy: fsdp, processes: N}`.

peftbench starts the N processes itself (torch.multiprocessing, spawn): one per GPU (NCCL backend) or, without
a GPU, N CPU processes (gloo). Each builds the run's model and method exactly as an unsharded run does (seeded,
so alike in every process), shards every transformer layer and then the rest of the model (FSDP2 shards each
parameter: every process keeps 1/N of every weight, gradient and AdamW state, frozen weights included, and
gathers a layer's weights only while that layer runs), then runs peftbench's one training loop
(peftbench.train) on its part of every micro-batch. Each part's loss is weighted by its share of the batch's
loss terms and FSDP sums the gradients, so each optimizer step is the unsharded step up to rounding and the
suite's batch_size stays the effective batch. Validation runs whole in every process (same weights, same loss),
so early stopping decides alike everywhere.

When training ends the processes gather the trained tensors and each one's training peak to rank 0, which alone
reports them to the process that started the run. That process rebuilds the model unsharded with those
tensors, evaluates it and hands the run's one outcome to the driver, the only writer of the store. The row's
peak memory is the sum of the processes' peaks, as Lialin et al. report T5-11B's over two GPUs; each process's
peak is kept in its `ranks` field.

Under the Ray executor a sharded run's task asks for `processes` GPUs (on a cluster with GPUs) or CPUs, and
its processes use what Ray gave it. Not sharded: evaluation (one device holds the trained model), and loading
(each process loads the whole model before sharding it, so host memory must hold N copies for a moment)."""

import dataclasses
import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from peftbench.architectures import layer_modules
from peftbench.errors import UserError

if TYPE_CHECKING:
    from peftbench.runspec import RunSpec

RESULT_FILE = "rank0.pt"  # what rank 0 hands back: the training result, trained tensors, every rank's peak


class ShardedRunError(RuntimeError):
    """A process of a sharded run failed; the message names the rank and its error's last line."""


def processes(spec: dict) -> int:
    """Processes a run trains over: the suite's sharding.processes, else 1."""
    return (spec.get("sharding") or {}).get("processes", 1)


def resources(spec: dict, cpus: float, gpus: float) -> dict[str, float]:
    """A Ray task's request for a run: a sharded run holds a whole GPU per process on a cluster with GPUs
    (`gpus` > 0), else a CPU per process."""
    count = processes(spec)
    if count == 1:
        return {"num_cpus": cpus, "num_gpus": gpus}
    return {"num_cpus": cpus, "num_gpus": max(gpus, count)} if gpus else {"num_cpus": max(cpus, count), "num_gpus": 0}


def refuse_unshardable(spec_text: str, method) -> None:
    """A method whose hook edits the model between optimizer steps (AdaLoRA's rank allocation) sees its shard
    only; refused at plan time rather than failing mid-grid."""
    if method.on_optimizer_step:
        raise UserError(f"method '{spec_text}' changes the model between optimizer steps and cannot be trained"
                        " sharded yet; remove the suite's 'sharding' key for it")


def refuse_unplaceable(grid, device: torch.device) -> None:
    """Runs sharded over more GPUs than this machine has are refused before anything loads."""
    wanted = max((processes(run.spec) for run in grid.runs), default=1)
    if wanted > 1 and device.type == "cuda" and torch.cuda.device_count() < wanted:
        raise UserError(f"sharding.processes {wanted} needs {wanted} GPUs but {torch.cuda.device_count()} are visible;"
                        f" set sharding.processes to at most {torch.cuda.device_count()} or run with --device cpu")


def shard(model: nn.Module, backbone: nn.Module, mesh) -> None:
    """FSDP2 over `model`: each transformer layer of `backbone` its own unit (gathered while it runs), the rest
    (embeddings, output layer, a method's tensors outside the layers, a classification head) the root unit.
    Gradients are summed over the ranks, not averaged: Ranks.part has weighted each rank's loss already."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    for layer in layer_modules(backbone):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # a plain sum: gloo has no pre-multiplied one


def _no_rows():
    raise RuntimeError("a sharded run's processes get their rows from the process that started them")


def _worker(rank: int, size: int, spec: "RunSpec", task, build_task_model, train_rows: list, val_rows: list,
            device_type: str, threads: int, folder: str, queue) -> None:
    """One process of a sharded run (torch.multiprocessing calls it with its rank first)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the starting process decides when a run stops, and stops us
    from torch.distributed.device_mesh import init_device_mesh

    from peftbench.measure import PeakMemory
    from peftbench.ranks import Ranks
    from peftbench.train import train

    torch.set_num_threads(threads)
    device = torch.device("cuda", rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"file://{folder}/rendezvous",
                            rank=rank, world_size=size)
    try:
        task_model = build_task_model(spec, task)
        backbone = task_model.model.backbone if task_model.uses_head else task_model.model
        shard(task_model.model, backbone, init_device_mesh(device.type, (size,)))
        memory = PeakMemory(device)
        memory.reset()  # the training peak, as an unsharded run's: after the model is in place
        encode = task_model.encoder.encode
        report = (lambda done, total, loss: queue.put((done, total, loss))) if rank == 0 else None
        trained = train(task_model, [encode(row) for row in train_rows], [encode(row) for row in val_rows],
                        spec.train, spec.seed, on_step=report, ranks=Ranks(rank, size, device))
        peaks: list = [None] * size
        dist.all_gather_object(peaks, memory.peak_bytes())
        # The root unit stays gathered after a forward pass without backward (the last validation), holding the
        # values from before the best epoch's weights were restored into the shards: back to the shards first.
        task_model.model.reshard()
        tensors = {}
        for name, parameter in task_model.model.named_parameters():
            if parameter.requires_grad:  # every rank takes part in each gather; rank 0 keeps the whole tensor
                whole = parameter.full_tensor()
                if rank == 0:
                    tensors[name] = whole.detach().to("cpu", copy=True)
        if rank == 0:
            torch.save({"result": dataclasses.asdict(trained), "tensors": tensors, "peaks": peaks},
                       Path(folder) / RESULT_FILE)
    finally:
        dist.destroy_process_group()


def _failure(error: Exception) -> ShardedRunError:
    text = str(error).strip().splitlines()
    last = next((line for line in reversed(text) if line.strip()), type(error).__name__)
    index = getattr(error, "error_index", None)
    return ShardedRunError(f"rank {index} of the sharded run failed: {last.strip()}" if index is not None
                           else f"a process of the sharded run failed: {last.strip()}")


def train_sharded(spec: "RunSpec", task, splits, device: torch.device, on_step=None, *, build_task_model):
    """Train one run over processes(spec) processes; returns (the trained task model, unsharded, on `device`;
    its encoded training examples; the training result; the peak memory summed over the ranks and each
    rank's), as execution's unsharded training does. `build_task_model(spec, task)` is execution's
    (handed in, a module-level function that pickles by name, so this module stays below execution)."""
    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException, get_context, start_processes

    from peftbench.interrupts import check_stop
    from peftbench.train import TrainResult

    size = spec.train.sharding["processes"]
    if device.type == "cuda" and torch.cuda.device_count() < size:
        raise ShardedRunError(f"{size} processes need {size} GPUs; {torch.cuda.device_count()} are visible")
    # CPU ranks share the cores; each GPU rank keeps the threads a run has.
    threads = max(1, torch.get_num_threads() // size) if device.type == "cpu" else torch.get_num_threads()
    rows = ([*splits.train_at(spec.data.n_train)], [*splits.val])
    portable = dataclasses.replace(task, load=_no_rows)  # a task's loader need not pickle; its rows go as they are
    with tempfile.TemporaryDirectory(prefix="peftbench-fsdp-") as folder:
        queue = get_context("spawn").SimpleQueue()
        context = start_processes(_worker, args=(size, spec, portable, build_task_model, *rows, device.type, threads, folder, queue),
                                  nprocs=size, join=False, daemon=True, start_method="spawn")

        def relay() -> None:
            while not queue.empty():
                message = queue.get()
                if on_step:
                    on_step(*message)

        try:
            while not context.join(timeout=0.25):
                relay()
                check_stop("during sharded training")
            relay()
        except (ProcessRaisedException, ProcessExitedException) as error:
            raise _failure(error) from error
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
        handed = torch.load(Path(folder) / RESULT_FILE, weights_only=True)
    task_model = build_task_model(spec, task)
    loaded = task_model.model.load_state_dict(handed["tensors"], strict=False)
    if loaded.unexpected_keys:
        raise ShardedRunError(f"rank 0 handed back tensors the model does not have: {loaded.unexpected_keys[:3]}")
    task_model.model.to(device)
    peaks = [peak for peak, _ in handed["peaks"]]
    measured = {"peak_memory_bytes": sum(peaks), "peak_memory_kind": handed["peaks"][0][1],
                "ranks": {"processes": size, "backend": "nccl" if device.type == "cuda" else "gloo",
                          "peak_memory_bytes": peaks}}
    train_examples = [task_model.encoder.encode(row) for row in rows[0]]
    return task_model, train_examples, TrainResult(**handed["result"]), measured
