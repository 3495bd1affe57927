"""The one training loop: AdamW, warm-up then linear annealing, gradient accumulation, bf16 autocast on
GPU, validation loss every epoch, early stopping that restores the best weights, and time and budget caps
(a capped run validates where it stopped and keeps the best weights so far). A tuning trial's pruner hears of
every epoch and may stop the run there (peftbench.tuning)."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from peftbench.data import batch_order, collate, count_tokens
from peftbench.evaluate import Scoring, TaskModel, autocast, batch_loss, to_device, validation
from peftbench.runspec import TrainPart

if TYPE_CHECKING:
    from peftbench.ranks import Ranks


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainResult:
    curve: list[dict] = field(default_factory=list)  # per epoch: train_loss, val_loss, seconds
    best_epoch: int = 0
    best_val_loss: float = math.inf
    seconds_to_best: float = 0.0
    stopped_by: str = "epochs"  # epochs | early_stopping | time | budget | pruned
    steps: int = 0
    train_tokens: int = 0
    train_seconds: float = 0.0


def parameter_groups(trainable: dict[str, torch.nn.Parameter], lr: float,
                     factor: Callable[[str, torch.nn.Parameter], float] | None) -> list[dict]:
    """AdamW's parameter groups: one, unless the method trains some tensors at another learning rate (LoRA+),
    then one per multiple of `lr`; the schedule scales every group alike."""
    if factor is None:
        return [{"params": list(trainable.values())}]
    by_factor: dict[float, list] = {}
    for name, parameter in trainable.items():
        by_factor.setdefault(factor(name, parameter), []).append(parameter)
    return [{"params": parameters, "lr": lr * multiple} for multiple, parameters in by_factor.items()]


def lr_factor(step: int, total: int, warmup: int, peak: float, final: float) -> float:
    """Pu et al. A.3: from 1x to `peak`x over the warm-up, then linearly to `final`x at the last step."""
    if step < warmup:
        return 1.0 + (peak - 1.0) * step / warmup
    return peak + (final - peak) * min(1.0, (step - warmup) / max(1, total - warmup))


FINITE_CHECK_EVERY = 16  # batches between checks for a NaN/inf training loss


def _check_finite(loss_sum: torch.Tensor, epoch: int, step: int) -> float:
    """The epoch's summed loss so far, read once (a device sync), refused if it is NaN or infinite."""
    value = float(loss_sum)
    if not math.isfinite(value):
        raise DivergedError(f"training loss became {value} in epoch {epoch} (by optimizer step {step})")
    return value


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _own(tensor: torch.Tensor) -> torch.Tensor:
    """What this process holds of a parameter: its shard when sharded (a DTensor), else the tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


# After each epoch's validation: (epoch, validation loss, validation metrics if scored) -> (what to add to the
# epoch's curve point, stop here?)
OnEpoch = Callable[[int, float, dict | None], tuple[dict, bool]]


def train(task_model: TaskModel, train_examples: list[dict], val_examples: list[dict], settings: TrainPart,
          seed: int, on_step: Callable[[int, int, float | None], None] | None = None,
          ranks: "Ranks | None" = None, on_epoch: OnEpoch | None = None,
          val_scoring: Scoring | None = None) -> TrainResult:
    """Train with a run spec's training settings (peftbench.runspec.TrainPart) and seed (the batch order's).
    `on_step(steps done, steps in all, the epoch's mean training loss so far)` after each optimizer step;
    `on_epoch` after each epoch's validation (a trial's pruner: its stop is recorded as `pruned`); with
    `val_scoring` that validation scores the set too (peftbench.evaluate.validation) and `on_epoch` hears the metrics.
    `ranks` (peftbench.sharding): this process is one of several training the run sharded; each takes its part
    of every batch, weighted so that the summed gradients and losses are the whole batch's."""
    model, device = task_model.model, task_model.device
    family = task_model.encoder.family
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    implementation = {"fused": True} if settings.fused_adamw and device.type == "cuda" else {"foreach": True}
    optimizer = torch.optim.AdamW(parameter_groups(trainable, settings.lr, task_model.learning_rate_factor),
                                  lr=settings.lr, weight_decay=settings.weight_decay, **implementation)
    total_steps = settings.total_steps(len(train_examples))
    warmup = round(settings.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, settings.peak_factor, settings.final_factor))
    caps = {"time": settings.max_minutes * 60 if settings.max_minutes else math.inf,
            "budget": settings.budget_seconds or math.inf}
    cap = min(caps, key=caps.get)  # whichever cap binds first names the stop
    deadline = time.perf_counter() + caps[cap]

    lengths = [len(example["input_ids"]) for example in train_examples]
    result, best_state, stale, running_loss = TrainResult(), None, 0, None
    started = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        model.train()
        epoch_started = time.perf_counter()
        batches = batch_order(lengths, settings.batch_size, seed=seed * 1000 + epoch,
                              group_by_length=task_model.group_by_length)
        # The loss is summed on the device and checked every few steps: reading it each step would stall a GPU.
        epoch_loss = torch.zeros((), device=device)
        for index, indices in enumerate(batches):
            cpu_batch = collate([train_examples[i] for i in indices], task_model.pad_id)
            result.train_tokens += count_tokens(cpu_batch, family)
            cpu_batch, share = ranks.part(cpu_batch, family) if ranks else (cpu_batch, 1.0)
            batch = to_device(cpu_batch, device)
            with autocast(task_model):
                loss = batch_loss(task_model, batch) * share
            (loss / settings.grad_accum).backward()
            epoch_loss += loss.detach().float()
            if (index + 1) % FINITE_CHECK_EVERY == 0 or index + 1 == len(batches):
                summed = ranks.total(epoch_loss) if ranks else epoch_loss  # every rank decides alike
                running_loss = _check_finite(summed, epoch, result.steps) / (index + 1)
            if (index + 1) % settings.grad_accum == 0 or index + 1 == len(batches):
                if settings.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(trainable.values(), settings.max_grad_norm)
                optimizer.step()
                scheduler.step()
                result.steps += 1
                if task_model.on_optimizer_step:
                    task_model.on_optimizer_step(result.steps)
                optimizer.zero_grad(set_to_none=True)
                if on_step:  # the loss as last read: reading it every step would stall a GPU
                    on_step(result.steps, total_steps, running_loss)
            past = time.perf_counter() > deadline
            if ranks and math.isfinite(caps[cap]):
                past = ranks.any(past)  # all stop at the same batch, or the others would wait for it forever
            if past:
                result.stopped_by = cap
                break
        _synchronize(device)
        # Training time excludes validation passes, so train tokens/s measures the training steps alone.
        result.train_seconds += time.perf_counter() - epoch_started
        val_loss, val_metrics = validation(task_model, val_examples, settings.batch_size, val_scoring)
        epoch_loss = ranks.total(epoch_loss) if ranks else epoch_loss
        result.curve.append({"epoch": epoch, "train_loss": float(epoch_loss) / (index + 1), "val_loss": val_loss,
                             "seconds": time.perf_counter() - started})
        prune = False
        if on_epoch:
            observed, prune = on_epoch(epoch, val_loss, val_metrics)
            result.curve[-1].update(observed)
        if val_loss < result.best_val_loss:
            result.best_val_loss, stale = val_loss, 0
            result.best_epoch, result.seconds_to_best = epoch, time.perf_counter() - started
            # Kept on the CPU so the copy does not add a model's worth of GPU memory to the peak.
            best_state = {name: _own(p.detach()).to("cpu", copy=True) for name, p in trainable.items()}
        else:
            stale += 1
        if result.stopped_by in ("time", "budget"):
            break
        if stale >= settings.patience:
            result.stopped_by = "early_stopping"
            break
        if prune and epoch < settings.epochs:  # a trial that ran every epoch is complete, whatever its rung says
            result.stopped_by = "pruned"
            break
    if best_state is not None:
        with torch.no_grad():
            for name, parameter in trainable.items():
                _own(parameter).copy_(best_state[name])
    return result
