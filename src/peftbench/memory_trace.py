"""The activation term of a memory plan (peftbench.memory): one training forward pass, loss included, traced on
fake tensors (shapes and dtypes, no data) through the modules a run trains, every tensor autograd saves summed
once per storage, per transformer layer and outside them; parameters are not activations and are left out.
`settings` is the plan's peftbench.memory.MemorySettings (not imported: memory imports this module)."""

import contextlib

import torch
from torch import nn

from peftbench.architectures import layer_modules
from peftbench.config import MethodSpec
from peftbench.errors import UserError
from peftbench.methods import METHODS


class UntraceableError(UserError):
    """The traced forward pass failed: the method does not run on the model at this shape."""


def to_fake(model: nn.Module, mode, dtype: torch.dtype) -> None:
    """Swap every meta parameter and buffer for a CPU fake tensor (shape, dtype, no data), ties kept.
    Floating-point parameters take the master-weight dtype, as load_model casts them."""
    converter, made = mode.fake_tensor_converter, {}

    def fake(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in made:
            meta = tensor.detach().to(dtype) if tensor.is_floating_point() and isinstance(tensor, nn.Parameter) \
                else tensor.detach()
            faked = converter.from_meta_and_device(mode, meta, torch.device("cpu"))
            made[id(tensor)] = nn.Parameter(faked, requires_grad=tensor.requires_grad) \
                if isinstance(tensor, nn.Parameter) else faked
        return made[id(tensor)]

    for module in model.modules():
        for slots in (module._parameters, module._buffers):
            for key, tensor in slots.items():
                if tensor is not None:
                    slots[key] = fake(tensor)


def _synthetic_batch(family: str, settings) -> dict[str, torch.Tensor]:
    """A training batch of the settings' shape. Its attention mask pads one position of the first row, as
    padded batches do: a mask of all ones lets transformers skip the mask on real tensors (a data-dependent
    shortcut the fake trace cannot take), and a planned peak should hold for padded batches."""
    batch, length = settings.batch_size, settings.seq_len
    total = length + (settings.target_len if family == "decoder" else 0)
    mask = torch.ones(batch, total, dtype=torch.long)
    mask[0, -1] = 0
    inputs = {"input_ids": torch.zeros(batch, total, dtype=torch.long), "attention_mask": mask}
    if family == "encoder":
        return {**inputs, "labels": torch.zeros(batch, dtype=torch.long)}
    if family == "seq2seq":
        return {**inputs, "labels": torch.zeros(batch, settings.target_len, dtype=torch.long)}
    return {**inputs, "labels": torch.zeros(batch, total, dtype=torch.long)}


def saved_tensor_bytes(model: nn.Module, backbone: nn.Module, family: str, settings,
                       mode=None) -> tuple[int, list[int], list[int], int, int]:
    """(saved bytes outside the layers, saved bytes per layer, input bytes per layer, saved bytes after the last
    layer: the output layer's and the loss's, the largest single tensor of those) of one training forward
    pass with the loss at the settings' shape, each storage counted once and parameters left out; `backbone`
    holds the layers (the model, or an encoder's under its head). Under `mode` (a FakeTensorMode, whose
    tensors the model holds) nothing is computed; without one the model's real tensors run, which is how the
    tests hold the fake trace to the real one."""
    from peftbench.evaluate import TaskModel, batch_loss

    model.train()
    layers = layer_modules(backbone)
    index_of = {id(module): position for position, module in enumerate(layers)}
    parameter_storages = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: set[int] = set()
    outside, per_layer, inputs, current = [0], [0] * len(layers), [0] * len(layers), [None]
    tail, largest = [0], [0]  # saved after the last layer so far (the output layer's and the loss's), its largest

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key not in parameter_storages and key not in seen:
            seen.add(key)
            if current[0] is None:
                outside[0] += storage.nbytes()
                tail[0] += storage.nbytes()
                largest[0] = max(largest[0], storage.nbytes())
            else:
                per_layer[current[0]] += storage.nbytes()
        return tensor

    def enter(module, args, kwargs):
        position = index_of[id(module)]
        current[0] = position
        hidden = args[0] if args else kwargs.get("hidden_states")
        inputs[position] = hidden.untyped_storage().nbytes() if isinstance(hidden, torch.Tensor) else 0

    def leave(module, args, output):
        current[0], tail[0], largest[0] = None, 0, 0

    hooks = [m.register_forward_pre_hook(enter, with_kwargs=True) for m in layers]
    hooks += [m.register_forward_hook(leave) for m in layers]
    task_model = TaskModel(model=model, encoder=None, uses_head=family == "encoder")
    try:
        with mode or contextlib.nullcontext(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.autocast):
            batch_loss(task_model, _synthetic_batch(family, settings))
    finally:
        for hook in hooks:
            hook.remove()
    return outside[0], per_layer, inputs, tail[0], largest[0]


def activations(model: nn.Module, backbone: nn.Module, family: str, settings,
                 mode) -> tuple[int, int, int, int]:
    """(activations without checkpointing, with it, transformer layers, the backward working set) traced at the
    settings' shape."""
    reason = METHODS.get(MethodSpec.parse(settings.method).name).no_meta_forward
    if reason:  # the method says so itself: its real forward runs, a data-free trace of it cannot
        raise UntraceableError(f"cannot plan the memory of {settings.model} · {settings.method}: {reason}, so its"
                               " activations cannot be traced without data (a run trains as usual)")
    try:
        outside, per_layer, inputs, _, tail_largest = saved_tensor_bytes(model, backbone, family, settings, mode)
    except Exception as error:  # the forward pass itself fails: a run of this method on this model would too
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UntraceableError(f"cannot plan the memory of {settings.model} · {settings.method}: its training"
                               f" forward pass fails ({type(error).__name__}: {first[:200]}); a run would fail"
                               " the same way, so check the method's options for this model") from None
    # The backward pass through a layer holds the gradients of its intermediate tensors, about as large as what
    # it saved. Through the loss it holds two tensors as large as the largest it saved, on top of it: the
    # log-softmax's output stays saved while the gradient coming in (from the NLL) and the one going out (to
    # the logits) are alive, all vocabulary-wide, which over a large vocabulary outweighs any layer. The
    # larger of the two on top, with or without checkpointing.
    working = max([*per_layer, 2 * tail_largest])
    full = outside + sum(per_layer) + working
    checkpointed = outside + sum(inputs) + max(per_layer, default=0) + working
    return full, checkpointed, len(per_layer), working
