"""Adapter methods implemented here (Lialin et al. sections 5 and 10): Houlsby and Pfeiffer bottleneck
adapters, the scaled parallel adapter, Compacter / Compacter++ (MAM and UniPELT, which combine these with
prefix tuning, are in methods/hybrids.py).

Every adapter is added by replacing a selected `nn.Linear` (architectures.linear_roles) with a small
wrapper whose `base_layer` is the frozen original (PEFT's naming, which accounting relies on). Trainable
tensors all carry `adapter_` in their names, so a checkpoint saved from one model loads into another built
the same way. Up-projections start at zero: before training the adapted model computes exactly the base model's function."""

import functools
import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from peftbench.architectures import LinearRole, linear_roles
from peftbench.errors import UserError
from peftbench.methods.base import AblationOptions, Method, freeze, register
from peftbench.methods.wrapping import WrappedLinear, replace_module

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


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


class SerialAdapter(WrappedLinear):
    """Houlsby / Pfeiffer placement: the adapter, with its own skip connection, right after the frozen
    projection and before the block's residual and normalisation. UniPELT gates the adapter's change."""

    def __init__(self, base_layer: nn.Linear, bottleneck: Bottleneck, gated: bool = False):
        super().__init__(base_layer)
        self.adapter_bottleneck = bottleneck
        self.adapter_gate = _linear(base_layer, base_layer.out_features, 1) if gated else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.base_layer(x)
        change = self.adapter_bottleneck(hidden)
        if self.adapter_gate is not None:
            change = change * torch.sigmoid(self.adapter_gate(hidden))
        return hidden + change


class ParallelAdapter(WrappedLinear):
    """He et al.'s scaled parallel adapter, at the FFN's output projection: base(x) + scale * adapter(u),
    where u is the FFN block's input, handed over by the FeedForwardTap on the block's input projection."""

    def __init__(self, base_layer: nn.Linear, bottleneck: Bottleneck, scale: float):
        super().__init__(base_layer)
        self.adapter_bottleneck = bottleneck
        self.scale = scale
        self.ffn_input: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ffn_input, self.ffn_input = self.ffn_input, None  # drop the reference: no activation outlives the call
        return self.base_layer(x) + self.scale * self.adapter_bottleneck(ffn_input)


class FeedForwardTap(WrappedLinear):
    """Wraps an FFN input projection to pass the block's input to its parallel adapter: BERT and OPT have
    no module around the FFN whose input could be taken instead."""

    def __init__(self, base_layer: nn.Linear, receiver: ParallelAdapter):
        super().__init__(base_layer)
        self.__dict__["receiver"] = receiver  # a plain reference: the adapter is registered once, at the output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.receiver.ffn_input = x
        return self.base_layer(x)


class PHMLinear(nn.Module):
    """Compacter's low-rank parameterised hypercomplex multiplication layer: the weight is
    sum_i A_i kron (s_i t_i), with the n x n "slow" matrices A shared by every Compacter layer of the
    model and the rank-one "fast" factors s_i (in/n x 1), t_i (1 x out/n) this layer's own."""

    def __init__(self, base: nn.Linear, in_features: int, out_features: int, shared: nn.Parameter,
                 zero: bool = False):
        super().__init__()
        n = shared.shape[0]
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.shared = shared
        self.left = nn.Parameter(torch.empty(n, in_features // n, 1, **factory))
        self.right = nn.Parameter(torch.empty(n, 1, out_features // n, **factory))
        self.bias = nn.Parameter(torch.zeros(out_features, **factory))
        for i in range(n):
            nn.init.xavier_uniform_(self.left[i])
            nn.init.xavier_uniform_(self.right[i])
        if zero:
            nn.init.zeros_(self.right)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, p, _ = self.left.shape
        fast = self.left @ self.right  # n x in/n x out/n
        # sum_i kron(A_i, fast_i), whose entry (a*p + c, b*q + d) is sum_i A_i[a, b] fast_i[c, d] (q = out/n)
        weight = torch.einsum("iab,icd->acbd", self.shared, fast).reshape(n * p, -1)
        return x @ weight + self.bias


def _size(d: int, reduction: int, multiple: int = 1) -> int:
    """Bottleneck width d / reduction (Lialin et al.'s counts use reduction 16, i.e. 64 on T5-Large's d=1024),
    at least 1 and rounded up to a multiple of Compacter's n."""
    return math.ceil(max(1, d // reduction) / multiple) * multiple


def _is_attention_output(role: LinearRole) -> bool:
    # Self-attention only: like the reference implementations (and Lialin et al.'s counts), no adapter
    # follows T5's cross-attention.
    return role.kind == "self_attn" and role.projection == "o"


def _is_ffn_output(role: LinearRole) -> bool:
    return role.kind == "ffn" and role.projection == "out"


def _is_houlsby_site(role: LinearRole) -> bool:
    return _is_attention_output(role) or _is_ffn_output(role)


class BottleneckOptions(AblationOptions):
    reduction: int = Field(16, ge=1)  # bottleneck width = hidden size / reduction
    nonlinearity: Literal["relu", "gelu"] = "relu"


def _bottleneck(base: nn.Linear, reduction: int, nonlinearity: str) -> Bottleneck:
    d = base.out_features
    width = _size(d, reduction)
    return Bottleneck(_linear(base, d, width), _linear(base, width, d, zero=True), nonlinearity)


def _add_serial(model: nn.Module, names: list[str], reduction: int, nonlinearity: str, gated: bool = False) -> None:
    for name in names:
        replace_module(model, name, lambda base: SerialAdapter(base, _bottleneck(base, reduction, nonlinearity), gated))


def _serial(keep):
    def apply(model: nn.Module, options: BottleneckOptions, context) -> nn.Module:
        names = context.select(model, options, keep)
        freeze(model)
        _add_serial(model, names, options.reduction, options.nonlinearity)
        return model
    return apply


class CompacterOptions(AblationOptions):
    reduction: int = Field(32, ge=1)  # Karimi Mahabadi et al.: width 32 on d=1024
    n: int = Field(4, ge=1)  # Kronecker products per layer (size of the shared matrices)
    nonlinearity: Literal["relu", "gelu"] = "gelu"


def _compacter(keep):
    def apply(model: nn.Module, options: CompacterOptions, context) -> nn.Module:
        names = context.select(model, options, keep)
        freeze(model)
        first = model.get_submodule(names[0])
        d, n = first.out_features, options.n
        if d % n:
            raise UserError(f"compacter: n={n} must divide the hidden size {d}; pick n among its divisors")
        shared = nn.Parameter(torch.empty(n, n, n, device=first.weight.device, dtype=first.weight.dtype))
        for i in range(n):
            nn.init.xavier_uniform_(shared[i])
        size = _size(d, options.reduction, multiple=n)
        for name in names:
            replace_module(model, name, lambda base: SerialAdapter(base, Bottleneck(
                PHMLinear(base, d, size, shared), PHMLinear(base, size, d, shared, zero=True),
                options.nonlinearity)))
        return model
    return apply


def _add_parallel(model: nn.Module, names: list[str], reduction: int, scale: float, nonlinearity: str) -> None:
    """A parallel adapter at each named FFN output projection, fed by a tap on that layer's first FFN
    input projection (the gated FFNs of T5 and Llama have two; both see the same input)."""
    inputs: dict[tuple[str, int], str] = {}
    for role in linear_roles(model):
        if role.kind == "ffn" and role.projection == "in":
            inputs.setdefault((role.stack, role.layer), role.name)
    roles = {role.name: role for role in linear_roles(model)}
    for name in names:
        role = roles[name]
        adapter = replace_module(model, name, lambda base: ParallelAdapter(base, _bottleneck(base, reduction, nonlinearity),
                                                                     scale))
        replace_module(model, inputs[(role.stack, role.layer)], functools.partial(FeedForwardTap, receiver=adapter))


class ParallelOptions(AblationOptions):
    reduction: int = Field(2, ge=1)  # He et al.: width 512 on d=1024
    scale: float = Field(4.0, gt=0)
    nonlinearity: Literal["relu", "gelu"] = "relu"


def _parallel(model: nn.Module, options: ParallelOptions, context) -> nn.Module:
    names = context.select(model, options, _is_ffn_output)
    freeze(model)
    _add_parallel(model, names, options.reduction, options.scale, options.nonlinearity)
    return model


def _owns_adapter(name: str) -> bool:
    return "adapter_" in name


# Lialin et al.'s best constant rate across methods was 1e-3; Pu et al.'s schedule warms up to 10x the
# starting rate, so adapters start at LoRA's 3e-4 and peak at 3e-3, around that value.
LR = 3e-4
for method in [
    Method(name="houlsby", summary="Houlsby adapters: bottlenecks after self-attention and FFN outputs",
           options=BottleneckOptions, apply=_serial(_is_houlsby_site), owns=_owns_adapter, default_lr=LR,
           identity_init=True),
    Method(name="pfeiffer", summary="Pfeiffer adapters: one bottleneck after each FFN output",
           options=BottleneckOptions, apply=_serial(_is_ffn_output), owns=_owns_adapter, default_lr=LR,
           identity_init=True),
    Method(name="parallel_adapter", summary="scaled parallel adapter (He et al. 2022) beside each FFN",
           options=ParallelOptions, apply=_parallel, owns=_owns_adapter, default_lr=LR, identity_init=True),
    Method(name="compacter", summary="Compacter: Houlsby-placed adapters of low-rank Kronecker (PHM) layers",
           options=CompacterOptions, apply=_compacter(_is_houlsby_site), owns=_owns_adapter, default_lr=LR,
           identity_init=True),
    Method(name="compacter_pp", summary="Compacter++: PHM adapters after each FFN output only",
           options=CompacterOptions, apply=_compacter(_is_ffn_output), owns=_owns_adapter, default_lr=LR,
           identity_init=True),
]:
    register(method)
