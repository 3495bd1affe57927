"""Adapter methods implemented here (Lialin et al. sections 5 and 10): Houlsby and Pfeiffer bottleneck
adapters, the scaled parallel adapter, Compacter / Compacter++ (MAM and UniPELT, which combine these with
prefix tuning, are in methods/hybrids.py).

Placement, nonlinearity and initialisation follow AdapterHub's `adapters` (configuration/adapter_config.py,
methods/modeling.py `Adapter` / `ParallelAdapter`), which Lialin et al. ran: `houlsby` is DoubleSeqBnConfig,
`pfeiffer` SeqBnConfig, `parallel_adapter` ParBnConfig, `compacter` / `compacter_pp` CompacterConfig /
CompacterPlusPlusConfig. Where a paper's own code places an adapter differently, an option offers it
(docs/methods.md has the table).

Every adapter is added by replacing a selected `nn.Linear` (architectures.linear_roles) with a small
wrapper whose `base_layer` is the frozen original (PEFT's naming, which accounting relies on). Adapters
that read the residual stream get it from a forward pre-hook on the module that first receives the stream
(architectures.feed_forward_residual), as AdapterHub's hook-based model interface does. Like that interface,
the adapter acts on the projection's output before the sublayer's residual dropout (AdapterHub's per-model
classes apply it after; in eval mode the two are the same). Trainable tensors all carry `adapter_` in their
names, so a checkpoint saved from one model loads into another built the same way. Only the parallel
adapter starts as the identity (its up-projection is zero); AdapterHub initialises the others at random."""

import functools
import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from peftbench.architectures import LinearRole, feed_forward_residual, linear_roles
from peftbench.methods.base import AblationOptions, Method, freeze, register
from peftbench.methods.wrapping import WrappedLinear, replace_module
from peftbench.tuning.space import Axis

# AdapterHub's names; swish is SiLU (transformers' get_activation("swish")).
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU}
Nonlinearity = Literal["relu", "gelu", "swish"]
# AdapterHub's `init_weights`; see _init_bottleneck.
Init = Literal["bert", "houlsby", "mam_adapter"]
# Where a serial adapter reads (see SerialAdapter).
Placement = Literal["after_residual", "before_residual"]


def _linear(base: nn.Linear, in_features: int, out_features: int, zero: bool = False, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(in_features, out_features, bias=bias, device=base.weight.device, dtype=base.weight.dtype)
    if zero:
        nn.init.zeros_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class Bottleneck(nn.Module):
    """Down-project, nonlinearity, up-project: the change an adapter adds (the skip is the caller's)."""

    def __init__(self, down: nn.Module, up: nn.Module, nonlinearity: str):
        super().__init__()
        self.down, self.act, self.up = down, ACTIVATIONS[nonlinearity](), up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class StreamReader(WrappedLinear):
    """A wrapped FFN output projection that also reads the residual stream entering its sublayer, handed
    over by `_tap_residual`'s hook just before the sublayer runs."""

    def __init__(self, base_layer: nn.Linear):
        super().__init__(base_layer)
        self.stream: torch.Tensor | None = None

    def _take_stream(self) -> torch.Tensor:
        stream, self.stream = self.stream, None  # drop the reference: no activation outlives the call
        if stream is None:
            raise RuntimeError("the adapter's residual tap did not run before its FFN output projection: the module"
                               " it hooks was replaced or bypassed")
        return stream


def _hand_over(reader: StreamReader, module: nn.Module, args: tuple) -> None:
    reader.stream = args[0]


def _tap_residual(model: nn.Module, role: LinearRole, reader: StreamReader) -> nn.Module | None:
    """Hand `reader` the residual stream entering the FFN sublayer of `role` (its output projection) at
    every forward; return the post-LN norm that follows the sublayer's residual add, if the model has one."""
    if role.kind != "ffn":
        raise ValueError(f"{role.name}: only FFN sublayers have a residual tap")
    source, post_norm = feed_forward_residual(model, role)
    model.get_submodule(source).register_forward_pre_hook(functools.partial(_hand_over, reader))
    return None if post_norm is None else model.get_submodule(post_norm)


class SerialAdapter(StreamReader):
    """A bottleneck f with its own skip connection at a sublayer's output projection (h = its output, x the
    residual stream entering the sublayer, N the post-LN norm after the residual add, identity in pre-LN
    models). UniPELT gates the change by sigmoid(g(u)), u being what f reads.

    before_residual (Houlsby; AdapterHub `original_ln_before=False`): f reads h, the projection returns
    h + f(h), and the model goes on to N(x + h + f(h)).
    after_residual (Pfeiffer; SeqBnConfig, `original_ln_before=True, residual_before_ln=True`): f reads the
    stream after the sublayer, u = N(x + h), and its skip is h: the projection returns h + f(u) and the model
    goes on to N(x + h + f(N(x + h))). Set by `read_stream`."""

    def __init__(self, base_layer: nn.Linear, bottleneck: nn.Module, gated: bool = False):
        super().__init__(base_layer)
        self.adapter_bottleneck = bottleneck
        self.adapter_gate = _linear(base_layer, base_layer.out_features, 1) if gated else None
        self.reads_stream = False
        self.__dict__["post_norm"] = None  # a plain reference: the norm belongs to the model

    def read_stream(self, post_norm: nn.Module | None) -> None:
        self.reads_stream = True
        self.__dict__["post_norm"] = post_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.base_layer(x)
        read = hidden
        if self.reads_stream:
            read = hidden + self._take_stream()
            if self.post_norm is not None:
                read = self.post_norm(read)
        change = self.adapter_bottleneck(read)
        if self.adapter_gate is not None:
            change = change * torch.sigmoid(self.adapter_gate(read))
        return hidden + change


class ParallelAdapter(StreamReader):
    """He et al.'s scaled parallel adapter at the FFN's output projection: h + scale * f(x), x being the
    residual stream entering the FFN sublayer, un-normalised (AdapterHub ParBnConfig; He et al.'s final
    mBART code, which reads the stream before the FFN's pre-norm)."""

    def __init__(self, base_layer: nn.Linear, bottleneck: Bottleneck, scale: float):
        super().__init__(base_layer)
        self.adapter_bottleneck = bottleneck
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.scale * self.adapter_bottleneck(self._take_stream())




def _size(d: int, reduction: int, multiple: int = 1) -> int:
    """Bottleneck width d / reduction (Lialin et al.'s counts use reduction 16, i.e. 64 on T5-Large's d=1024),
    at least 1 and rounded up to a multiple of Compacter's n."""
    return math.ceil(max(1, d // reduction) / multiple) * multiple


def _is_attention_output(role: LinearRole) -> bool:
    # Self-attention only: like the reference implementations (AdapterHub's `cross_adapter=False`, and
    # Lialin et al.'s counts), no adapter follows T5's cross-attention.
    return role.kind == "self_attn" and role.projection == "o"


def _is_ffn_output(role: LinearRole) -> bool:
    return role.kind == "ffn" and role.projection == "out"


def _is_houlsby_site(role: LinearRole) -> bool:
    return _is_attention_output(role) or _is_ffn_output(role)


def _init_bottleneck(down: nn.Linear, up: nn.Linear, init: str) -> None:
    """AdapterHub's `init_weights` (methods/modeling.py, Adapter.__init__); biases start at zero in all three.
    bert: weights N(0, 0.02), BERT's init (SeqBn and DoubleSeqBn default). houlsby: weights from N(0, 1e-2)
    truncated at two standard deviations (Houlsby et al. section 3.1, a near-identity start). mam_adapter:
    down as nn.Linear (Kaiming uniform), up zero, so the adapter starts as the identity (ParBn default; He
    et al.'s `lora` init)."""
    with torch.no_grad():
        for layer in (down, up):
            nn.init.zeros_(layer.bias)
            if init == "bert":
                nn.init.normal_(layer.weight, std=0.02)
            elif init == "houlsby":
                nn.init.trunc_normal_(layer.weight, std=1e-2, a=-2e-2, b=2e-2)
        if init == "mam_adapter":
            nn.init.zeros_(up.weight)  # down keeps nn.Linear's Kaiming-uniform init


def _bottleneck(base: nn.Linear, reduction: int, nonlinearity: str, init: str) -> Bottleneck:
    d = base.out_features
    width = _size(d, reduction)
    down, up = _linear(base, d, width), _linear(base, width, d)
    _init_bottleneck(down, up, init)
    return Bottleneck(down, up, nonlinearity)


def _place_serial(model: nn.Module, names: list[str], bottleneck, placement: str, gated: bool = False) -> None:
    """A SerialAdapter with `bottleneck(base layer)` at each named output projection, reading as `placement` says."""
    roles = {role.name: role for role in linear_roles(model)}
    for name in names:
        adapter = replace_module(model, name, lambda base: SerialAdapter(base, bottleneck(base), gated))
        if placement == "after_residual":
            adapter.read_stream(_tap_residual(model, roles[name], adapter))


def _add_serial(model: nn.Module, names: list[str], reduction: int, nonlinearity: str, gated: bool = False,
                placement: str = "after_residual", init: str = "bert") -> None:
    """Bottleneck adapters at the named output projections; the defaults are AdapterHub's SeqBnConfig."""
    _place_serial(model, names, lambda base: _bottleneck(base, reduction, nonlinearity, init), placement, gated)


class BottleneckOptions(AblationOptions):
    reduction: int = Field(16, ge=1)  # bottleneck width = hidden size / reduction
    nonlinearity: Nonlinearity = "relu"
    init: Init = "bert"


class HoulsbyOptions(BottleneckOptions):
    # DoubleSeqBnConfig's swish. Houlsby et al.'s own adapter-bert code uses GELU, and its paper's init is
    # `init=houlsby`: houlsby[nonlinearity=gelu,init=houlsby] is the paper's adapter.
    nonlinearity: Nonlinearity = "swish"


class PfeifferOptions(BottleneckOptions):
    placement: Placement = "after_residual"  # SeqBnConfig, as Pfeiffer et al. 2021 (AdapterFusion) place it


def _houlsby(model: nn.Module, options: HoulsbyOptions, context) -> nn.Module:
    names = context.select(model, options, _is_houlsby_site)
    freeze(model)
    _add_serial(model, names, options.reduction, options.nonlinearity, placement="before_residual", init=options.init)
    return model


def _pfeiffer(model: nn.Module, options: PfeifferOptions, context) -> nn.Module:
    names = context.select(model, options, _is_ffn_output)
    freeze(model)
    _add_serial(model, names, options.reduction, options.nonlinearity, placement=options.placement, init=options.init)
    return model


def _add_parallel(model: nn.Module, names: list[str], reduction: int, scale: float, nonlinearity: str,
                  init: str = "mam_adapter") -> None:
    """A parallel adapter at each named FFN output projection, reading the residual stream that enters the FFN."""
    roles = {role.name: role for role in linear_roles(model)}
    for name in names:
        adapter = replace_module(model, name, lambda base: ParallelAdapter(
            base, _bottleneck(base, reduction, nonlinearity, init), scale))
        _tap_residual(model, roles[name], adapter)  # post-LN models normalise after the add, as the model does


class ParallelOptions(BottleneckOptions):
    reduction: int = Field(2, ge=1)  # He et al.: width 512 on d=1024
    scale: float = Field(4.0, gt=0)
    init: Init = "mam_adapter"


def _parallel(model: nn.Module, options: ParallelOptions, context) -> nn.Module:
    names = context.select(model, options, _is_ffn_output)
    freeze(model)
    _add_parallel(model, names, options.reduction, options.scale, options.nonlinearity, options.init)
    return model


def _owns_adapter(name: str) -> bool:
    return "adapter_" in name


# Lialin et al.'s best constant rate across methods was 1e-3; Pu et al.'s schedule warms up to 10x the
# starting rate, so adapters start at LoRA's 3e-4 and peak at 3e-3, around that value. Only the parallel
# adapter starts as the identity (ParBn's mam_adapter init); AdapterHub initialises the others at random.
LR = 3e-4
# Houlsby et al. (section 3.1) choose the bottleneck from {8, 64, 256} on BERT-Large (d=1024): reductions 4 to 128.
REDUCTIONS = Axis("reduction", choices=(4, 8, 16, 32, 64))
for method in [
    Method(name="houlsby", summary="Houlsby adapters (AdapterHub DoubleSeqBn): bottlenecks after self-attention"
           " and FFN outputs", options=HoulsbyOptions, apply=_houlsby, owns=_owns_adapter, default_lr=LR,
           taxonomy="additive", tuning_axes=(REDUCTIONS,), reference="Houlsby et al. 2019; AdapterHub DoubleSeqBnConfig"),
    Method(name="pfeiffer", summary="Pfeiffer adapters (AdapterHub SeqBn): one bottleneck on the residual stream"
           " after each FFN", options=PfeifferOptions, apply=_pfeiffer, owns=_owns_adapter, default_lr=LR,
           taxonomy="additive", tuning_axes=(REDUCTIONS,), reference="Pfeiffer et al. 2021 (AdapterFusion); AdapterHub SeqBnConfig"),
    Method(name="parallel_adapter", summary="scaled parallel adapter (He et al. 2022, AdapterHub ParBn) beside"
           " each FFN", options=ParallelOptions, apply=_parallel, owns=_owns_adapter, default_lr=LR,
           identity_init=True, taxonomy="additive", reference="He et al. 2022; AdapterHub ParBnConfig"),
]:
    register(method)
