"""Peak training memory planned from a model's config alone, before anything loads (`peftbench memory`,
`run --dry-run`, and the refusal of runs that cannot fit the device).

The plan adds up, per device:

- **weights**: the base model's parameters at the master-weight dtype (suite key weights_dtype);
- **method tensors**: the parameters the method adds (LoRA's A and B, adapters, prefixes), at that dtype;
- **gradients** of the trainable parameters (one per parameter, same dtype) and **AdamW states** (two per
  trainable parameter: exp_avg and exp_avg_sq, same dtype; Lialin et al. section 3: "for every byte of
  trainable parameter, one extra byte is needed for its gradient, and two more ... optimizer state");
- **activations**: the tensors autograd keeps for the backward pass. These are not computed from a formula:
  one training forward pass (loss included) is traced on fake tensors, which carry shapes and dtypes but no
  data, through the very modules a run trains (model built from its config on the meta device, the method
  applied by its own `apply`, in training mode so that dropout masks count), at batch × lengths, and every
  tensor autograd saves is summed once per storage, parameters excluded. That covers batch × lengths ×
  layers × widths of every architecture, the attention matrices, the logits and the method's own activations
  (a prefix's keys, an adapter's bottleneck) without a per-architecture formula. Under bf16 autocast the
  bf16 copies of frozen weights that matrix products keep for the backward pass are saved tensors too, and
  count (a real cost of autocast over fp32 weights).
  To those saved tensors the plan adds the **backward working set**: while the backward pass runs through a
  layer it holds the gradients of its intermediate tensors, about as large as what it saved; through the loss
  it holds the incoming and outgoing vocabulary-wide gradients beside the saved log-softmax, twice the largest
  tensor the loss saved. The larger of the two.
- **with gradient checkpointing** (HF's, per transformer layer): the saved tensors outside the layers, plus
  each layer's input hidden states (what a checkpoint keeps), plus the largest single layer's saved tensors
  (recomputed one layer at a time during the backward pass), plus the same working set.
- **sharded** over N GPUs (suite key `sharding: {processes: N}`, peftbench.sharding): one GPU's plan, with
  weights, method tensors, gradients and AdamW states divided by N, plus what FSDP gathers whole (the root
  unit, two layers, one layer's gradients), and activations traced at that GPU's part of the micro-batch.

The peak is weights + method tensors + AdamW states + the larger of the activations (the start of the backward
pass) and the gradients with a layer's working set (its end): gradients appear as activations are freed and
are cleared at each optimizer step. With gradient accumulation both count (earlier micro-batches' gradients
are alive beside the next one's activations). It is no upper bound: one op's workspace and the allocator's
overhead are not counted. The trace runs on CPU fake tensors:
attention there takes PyTorch's CPU kernels, so on CUDA, where flash / memory-efficient attention keeps no
attention matrix, the activation term of BERT-, Llama- and OPT-style models is pessimistic; T5's attention
is eager everywhere. docs/memory.md compares the plan with measured peaks and with Lialin et al. Table 5."""

import dataclasses
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from peftbench.architectures import layer_modules
from peftbench.errors import UserError
from peftbench.memory_trace import activations, to_fake

GB = 1e9
ADAMW_STATES = 2  # exp_avg and exp_avg_sq, in the parameter's dtype
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class MemorySettings:
    model: str
    method: str = "full"
    batch_size: int = 8  # the micro-batch: one forward and backward pass
    seq_len: int = 128  # input tokens per sequence
    target_len: int = 8  # target tokens (text-to-text: a decoder sees them appended, a seq2seq decodes them)
    weights_dtype: str = "float32"
    autocast: bool = False  # bf16 autocast over the weights, as `run` trains on CUDA
    gradient_checkpointing: bool = False
    # FSDP over this many GPUs (the suite's sharding.processes, peftbench.sharding): weights, gradients and AdamW
    # states are split between them and so is each micro-batch; the plan is then one GPU's.
    processes: int = 1
    # Micro-batches per optimizer step: with more than one, gradients of the earlier ones are alive while a
    # later one's activations are.
    grad_accum: int = 1

    @property
    def rows(self) -> int:
        """Sequences one device runs of each micro-batch."""
        return math.ceil(self.batch_size / self.processes)


MAX_PROCESSES = 1024  # the most GPUs a plan looks for when it suggests sharding


@dataclass
class MemoryPlan:
    settings: MemorySettings
    family: str
    total_params: int
    trainable_params: int
    weights: int  # bytes of the base model's parameters (the whole model's, sharded or not)
    method_tensors: int  # bytes of the parameters the method adds
    gradients: int
    optimizer: int
    activations: int  # on one device, with or without checkpointing, as the settings ask
    activations_full: int  # without gradient checkpointing
    activations_checkpointed: int  # with it
    layers: int
    # Both at one sequence: activations are not proportional to the batch (autocast's weight copies and T5's
    # position bias do not grow with it), so a smaller micro-batch is planned between the two traces.
    # None: planned without them (plan_memory's micro_batches), for the settings' own micro-batch only.
    activations_one_full: int | None = 0
    activations_one_checkpointed: int | None = 0
    # What FSDP holds whole on each GPU: the root unit's parameters (all outside the layers) through the
    # forward and backward passes, two layers' parameters (the running one and the next, prefetched) and one
    # layer's gradients before they are reduced and scattered.
    gathered: int = 0
    working: int = 0  # the backward working set (part of the activations): gradients in flight inside a layer
    notes: list[str] = field(default_factory=list)

    def fixed_on(self, processes: int) -> float:
        """What does not depend on the micro-batch, on one of `processes` GPUs: weights, method tensors,
        gradients and optimizer states (split between them when sharded, plus FSDP's gathered units)."""
        whole = self.weights + self.method_tensors + self.gradients + self.optimizer
        return whole if processes == 1 else whole / processes + self.gathered

    @property
    def fixed(self) -> float:
        return self.fixed_on(self.settings.processes)

    def peak_on(self, processes: int, activations: float) -> float:
        """One of `processes` GPUs' peak with these activations. Gradients appear as the backward pass frees
        the activations and are cleared at every optimizer step, so with one micro-batch per step the peak is
        at the start of the backward pass (every activation, no gradient yet) or at its end (every gradient,
        and the working set of the first layer's backward pass): the larger of the two. With gradient
        accumulation the earlier micro-batches' gradients stay alive while the next one's activations are."""
        gradients = self.gradients / processes
        rest = self.fixed_on(processes) - gradients
        both = gradients + activations if self.settings.grad_accum > 1 else \
            max(gradients + self.working, activations)
        return rest + both

    @property
    def total(self) -> float:
        return self.peak_on(self.settings.processes, self.activations)

    def parts(self) -> dict[str, int]:
        """One device's bytes by part."""
        share = self.settings.processes
        parts = {"weights": self.weights, "method_tensors": self.method_tensors, "gradients": self.gradients,
                 "optimizer_states": self.optimizer}
        parts = {key: math.ceil(value / share) for key, value in parts.items()}
        if share > 1:
            parts["fsdp_gathered"] = self.gathered
        return {**parts, "activations": self.activations}

    def as_dict(self) -> dict:
        return {"settings": asdict(self.settings), "family": self.family, "total_params": self.total_params,
                "trainable_params": self.trainable_params, "bytes": {**self.parts(), "total": self.total},
                "activations_without_checkpointing": self.activations_full,
                "activations_with_checkpointing": self.activations_checkpointed, "layers": self.layers,
                "notes": self.notes}

    def activations_of(self, rows: int, checkpointed: bool | None = None) -> float:
        """Planned activations of a device running `rows` sequences: linear between the traces at one and at
        the settings' rows."""
        if checkpointed is None:
            checkpointed = self.settings.gradient_checkpointing
        at_one, at_rows = (self.activations_one_checkpointed, self.activations_checkpointed) if checkpointed \
            else (self.activations_one_full, self.activations_full)
        traced = self.settings.rows
        if at_one is None:
            raise ValueError("this plan was made without micro_batches: plan it with them to plan another micro-batch")
        if traced == 1:
            return at_rows * rows
        return at_one + (at_rows - at_one) * (rows - 1) / (traced - 1)

    def activations_at(self, batch: int, checkpointed: bool | None = None) -> float:
        """Planned activations of one device at another micro-batch (split between the processes)."""
        return self.activations_of(math.ceil(batch / self.settings.processes), checkpointed)

    def shards_needed(self, capacity: float, checkpointed: bool | None = None) -> int | None:
        """The fewest GPUs of `capacity` bytes that the run fits sharded over (the suite's sharding.processes):
        weights, gradients and optimizer states split between them, FSDP's gathered units on each, and each
        micro-batch split between them too, with the settings' activations or (`checkpointed`) those with or
        without checkpointing; 1 if it fits one; None if no number up to MAX_PROCESSES does."""
        batch = self.settings.batch_size
        return next((n for n in range(1, MAX_PROCESSES + 1)
                     if self.peak_on(n, self.activations_of(math.ceil(batch / n), checkpointed)) <= capacity), None)

    def largest_micro_batch(self, capacity: float, checkpointed: bool | None = None) -> int:
        """The largest micro-batch up to the settings' that fits `capacity`; 0 if none."""
        return next((b for b in range(self.settings.batch_size, 0, -1)
                     if self.fixed + self.activations_at(b, checkpointed) <= capacity), 0)


def _check(settings: MemorySettings) -> None:
    for flag, value in (("--batch-size", settings.batch_size), ("--seq-len", settings.seq_len),
                        ("--target-len", settings.target_len), ("--processes", settings.processes)):
        if value < 1:
            raise UserError(f"{flag} {value} is too small; use at least 1")
    if settings.weights_dtype not in DTYPES:
        raise UserError(f"weights dtype '{settings.weights_dtype}' is unknown; use {' or '.join(DTYPES)}")


def plan_memory(settings: MemorySettings, micro_batches: bool = True) -> MemoryPlan:
    """The memory plan of one training run; raises UserError for a bad setting or a method that does not fit
    the model. Seconds even for T5-11B: nothing is allocated. Without `micro_batches` the second trace, at one
    sequence, is left out (half the time): the plan then gives the settings' own peak, not other micro-batches'
    (what a dry run shows)."""
    from peftbench.accounting import adapted_meta_model
    from peftbench.heads import MeanPoolClassifier

    _check(settings)
    adapted, family, base, _, _ = adapted_meta_model(settings.model, settings.method)
    base_ids = {id(p) for _, p in base}
    element = DTYPES[settings.weights_dtype].itemsize
    parameters = list(adapted.parameters())
    total = sum(p.numel() for _, p in base)
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    added = sum(p.numel() for p in parameters if id(p) not in base_ids)
    model = adapted
    if family == "encoder":  # the mean-pooling head a run puts on an encoder, trained by every method
        with torch.device("meta"):
            model = MeanPoolClassifier(adapted, adapted.config.hidden_size, 2)
        head = sum(p.numel() for p in model.head.parameters())
        added, trainable = added + head, trainable + head
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    to_fake(model, mode, DTYPES[settings.weights_dtype])
    # One device's part of the micro-batch is traced: all of it unless sharded.
    traced = dataclasses.replace(settings, batch_size=settings.rows, processes=1)
    full, checkpointed, layers, working = activations(model, adapted, family, traced, mode)
    if traced.batch_size == 1:
        one_full, one_checkpointed = full, checkpointed
    elif micro_batches:
        one_full, one_checkpointed, _, _ = activations(model, adapted, family, dataclasses.replace(traced, batch_size=1),
                                                       mode)
    else:
        one_full = one_checkpointed = None
    notes = []
    if not layers:
        notes.append("no transformer layers recognised: checkpointing is planned as saving nothing")
    return MemoryPlan(settings=settings, family=family, total_params=total, trainable_params=trainable,
                      weights=total * element, method_tensors=added * element, gradients=trainable * element,
                      optimizer=ADAMW_STATES * trainable * element,
                      activations=checkpointed if settings.gradient_checkpointing else full,
                      activations_full=full, activations_checkpointed=checkpointed, layers=layers,
                      activations_one_full=one_full, activations_one_checkpointed=one_checkpointed,
                      gathered=_gathered(model, adapted) * element, working=working, notes=notes)


def _gathered(model: nn.Module, backbone: nn.Module) -> int:
    """Parameters FSDP holds whole on each GPU (peftbench.sharding's units): the root unit's (everything
    outside the layers) for the whole pass, two layers' (the running one and the next, prefetched), and
    one layer's trainable ones for its gradients before they are reduced and scattered."""
    layers = [list(layer.parameters()) for layer in layer_modules(backbone)]
    in_layers = sum(p.numel() for layer in layers for p in layer)
    largest = max((sum(p.numel() for p in layer) for layer in layers), default=0)
    trained = max((sum(p.numel() for p in layer if p.requires_grad) for layer in layers), default=0)
    return sum(p.numel() for p in model.parameters()) - in_layers + 2 * largest + trained


def gb(value: float) -> str:
    return f"{value / GB:,.1f} GB" if value >= GB else f"{value / 1e6:,.1f} MB"


def fit_options(plan: MemoryPlan, capacity: float, peft: MemoryPlan | None = None, grad_accum: int = 1) -> list[str]:
    """What would make a run that does not fit `capacity` bytes fit, each with its planned peak: a PEFT method
    (`peft`, planned at the same shape), a smaller micro-batch with more gradient accumulation (the same
    effective batch), gradient checkpointing, or sharding over several GPUs of this size."""
    options = []
    if peft is not None and peft.total <= capacity:
        options.append(f"a PEFT method ({peft.settings.method}: {gb(peft.total)})")
    batch, effective = plan.settings.batch_size, plan.settings.batch_size * grad_accum
    # The largest micro-batch that fits and divides the effective batch, so that the effective batch stays.
    micro = next((m for m in range(min(plan.largest_micro_batch(capacity), batch - 1), 0, -1) if effective % m == 0), 0)
    if micro:
        accum = effective // micro
        options.append(f"micro-batch {micro} with gradient accumulation {accum}"
                       f" ({gb(plan.fixed + plan.activations_at(micro))})")
    with_checkpointing = plan.peak_on(plan.settings.processes, plan.activations_checkpointed)
    if not plan.settings.gradient_checkpointing and with_checkpointing <= capacity:
        options.append(f"gradient checkpointing ({gb(with_checkpointing)})")
    def on_each(processes: int, checkpointed: bool) -> str:
        batch = plan.settings.batch_size
        return gb(plan.peak_on(processes, plan.activations_of(math.ceil(batch / processes), checkpointed)))

    checkpointing = plan.settings.gradient_checkpointing
    shards = plan.shards_needed(capacity)
    if shards and shards > 1:
        options.append(f"sharding over {shards} GPUs of this size (sharding: {{processes: {shards}}}; FSDP:"
                       f" {on_each(shards, checkpointing)} each)")
    with_checkpoints = None if checkpointing else plan.shards_needed(capacity, True)
    if with_checkpoints and with_checkpoints > 1 and (shards is None or with_checkpoints < shards):
        options.append(f"gradient checkpointing and sharding over {with_checkpoints} GPUs of this size (sharding:"
                       f" {{processes: {with_checkpoints}}}; FSDP: {on_each(with_checkpoints, True)} each)")
    return options
