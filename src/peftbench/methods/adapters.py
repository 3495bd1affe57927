"""Adapter methods implemented here (Lialin et al. sections 5 and 10): Houlsby and Pfeiffer bottleneck
adapters, the scaled parallel adapter, Compacter / Compacter++, MAM and UniPELT.

Every adapter is added by replacing a selected `nn.Linear` (architectures.linear_roles) with a small
wrapper whose `base_layer` is the frozen original (PEFT's naming, which accounting relies on). Trainable
tensors all carry `adapter_` in their names (plus PEFT's `prompt_encoder` for the prefix of MAM and
UniPELT), so a checkpoint saved from one model loads into another built the same way. Up-projections
start at zero: before training the adapted model computes exactly the base model's function."""

import functools
import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from peftbench.architectures import LinearRole, linear_roles
from peftbench.errors import UserError
from peftbench.methods.base import AblationOptions, Method, Options, freeze, register
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


class GatedLoRA(WrappedLinear):
    """UniPELT's LoRA: base(x) + sigmoid(w.x + b) * (alpha / r) * B A x, with B starting at zero."""

    def __init__(self, base_layer: nn.Linear, r: int, alpha: float):
        super().__init__(base_layer)
        self.adapter_lora_a = _linear(base_layer, base_layer.in_features, r, bias=False)
        self.adapter_lora_b = _linear(base_layer, r, base_layer.out_features, zero=True, bias=False)
        self.adapter_gate = _linear(base_layer, base_layer.in_features, 1)
        self.scaling = alpha / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        change = self.scaling * self.adapter_lora_b(self.adapter_lora_a(x))
        return self.base_layer(x) + torch.sigmoid(self.adapter_gate(x)) * change


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


def _add_prefix(model: nn.Module, tokens: int, hidden: int, family: str) -> nn.Module:
    """PEFT's prefix tuning over the adapted model. PEFT freezes everything it wraps; the adapters are
    unfrozen again. On T5, PEFT prefixes the decoder's self-attention only."""
    from peft import get_peft_model

    from peftbench.methods.prompt_methods import prefix_config

    wrapped = get_peft_model(model, prefix_config(model, family, tokens, hidden))
    for name, parameter in wrapped.named_parameters():
        if "adapter_" in name:
            parameter.requires_grad_(True)
    return wrapped


class PrefixOptions(Options):
    tokens: int = Field(30, ge=1)  # He et al.'s MAM: prefix length 30
    # Width of Li & Liang's MLP that maps the prefix to every layer's keys and values (as prefix_tuning's
    # `hidden`; He et al. used 800); 0 trains the keys and values directly.
    hidden: int = Field(800, ge=0)


class MamOptions(PrefixOptions):
    reduction: int = Field(2, ge=1)
    scale: float = Field(4.0, gt=0)
    nonlinearity: Literal["relu", "gelu"] = "relu"


def _mam(model: nn.Module, options: MamOptions, context) -> nn.Module:
    names = context.select(model, AblationOptions(), _is_ffn_output)
    freeze(model)
    _add_parallel(model, names, options.reduction, options.scale, options.nonlinearity)
    return _add_prefix(model, options.tokens, options.hidden, context.family)


# The keyword under which attention modules receive the key/value cache: `cache` since transformers 5.24
# (BERT), `past_key_values` before (and still elsewhere).
CACHE_KEYWORDS = ("cache", "past_key_values")


def _attention_cache(kwargs: dict):
    """The cache an attention module was called with. PEFT's prefix always arrives as a cache, so finding
    none means transformers renamed the keyword again: fail loudly rather than leave the gate dead."""
    for keyword in CACHE_KEYWORDS:
        if kwargs.get(keyword) is not None:
            return kwargs[keyword]
    raise RuntimeError(f"unipelt's prefix gate found no key/value cache among the attention's keywords"
                       f" ({', '.join(sorted(kwargs))}); transformers passes it under a name not in {CACHE_KEYWORDS}")


class PrefixGate(nn.Linear):
    """UniPELT's prefix gate for one bidirectional self-attention layer: scales the layer's prefix keys and
    values by sigmoid(w.x + b). It must be one number per example (the prefix is shared by every query);
    Mao et al. average over the sequence, which in a padded batch takes in padding, so x is the first
    token's hidden state ([CLS]), never padding in an encoder batch and attending to the whole input."""

    def scale_prefix(self, attention: nn.Module, args: tuple, kwargs: dict) -> None:
        cache = _attention_cache(kwargs)
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        gate = torch.sigmoid(self(hidden[:, 0])).view(-1, 1, 1, 1)
        # PEFT builds an encoder's cache afresh for every forward; before this layer's update it holds
        # only the prefix, so scaling it in place gates the prefix alone.
        layer = cache.layers[attention.layer_idx]
        layer.keys, layer.values = layer.keys * gate, layer.values * gate


class UniPeltOptions(PrefixOptions):
    tokens: int = Field(10, ge=1)  # Mao et al.: prefix length 10, MLP width 512
    hidden: int = Field(512, ge=0)
    r: int = Field(8, ge=1)
    alpha: float = Field(16, gt=0)
    reduction: int = Field(16, ge=1)
    nonlinearity: Literal["relu", "gelu"] = "relu"


def _unipelt(model: nn.Module, options: UniPeltOptions, context) -> nn.Module:
    """Mao et al.'s gated LoRA (q, v), prefix and FFN adapter. LoRA's and the adapter's gates are per token
    rather than averaged over the sequence: an average would let a decoder's earlier positions see later
    tokens and make outputs depend on the batch's padding. The prefix gate is per example and exists only
    in bidirectional attention (encoders): in causal attention a per-example gate would leak later tokens,
    and a constant one is a mere rescaling of the prefix."""
    everything = AblationOptions()
    lora = context.select(model, everything, lambda role: role.kind != "ffn" and role.projection in ("q", "v"))
    queries = context.select(model, everything, lambda role: role.kind == "self_attn" and role.projection == "q")
    ffn = context.select(model, everything, _is_ffn_output)
    freeze(model)
    for name in lora:
        replace_module(model, name, lambda base: GatedLoRA(base, options.r, options.alpha))
    _add_serial(model, ffn, options.reduction, options.nonlinearity, gated=True)
    if context.family == "encoder":
        for name in queries:
            attention = model.get_submodule(name.rpartition(".")[0])
            base = model.get_submodule(name).base_layer
            attention.adapter_prefix_gate = PrefixGate(base.in_features, 1, device=base.weight.device,
                                                       dtype=base.weight.dtype)
            attention.register_forward_pre_hook(attention.adapter_prefix_gate.scale_prefix, with_kwargs=True)
    return _add_prefix(model, options.tokens, options.hidden, context.family)


def _owns_adapter(name: str) -> bool:
    return "adapter_" in name


def _owns_adapter_or_prefix(name: str) -> bool:
    return "adapter_" in name or "prompt_encoder" in name


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
    Method(name="mam", summary="MAM adapter (He et al. 2022): prefix tuning + scaled parallel FFN adapter",
           options=MamOptions, apply=_mam, owns=_owns_adapter_or_prefix, default_lr=LR),
    Method(name="unipelt", summary="UniPELT (Mao et al. 2022): gated LoRA, prefix tuning and FFN adapter",
           options=UniPeltOptions, apply=_unipelt, owns=_owns_adapter_or_prefix, default_lr=LR),
]:
    register(method)
