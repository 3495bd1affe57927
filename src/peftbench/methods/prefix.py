"""Prefix tuning (Li & Liang 2021), peftbench's own, on every attention site of T5, Llama/OPT and BERT.

Each site (`encoder`: encoder self-attention; `decoder`: decoder self-attention; `cross`: decoder
cross-attention) has its own prefix network: Li & Liang's reparametrisation, an embedding of the P prefix
positions (d_model wide) through Linear(d_model, hidden) - tanh - Linear(hidden, layers x 2 x key width),
or with `hidden=0` the keys and values themselves ("flat"). That is the structure of AdapterHub's
`methods/prefix_tuning.py` (PrefixTuning, FlatPrefixTuning; one network per location key), which the
survey ran, and of Li & Liang's `seq2seq/prefixTuning.py` (wte/control_trans, wte_enc/control_trans_enc,
wte2/control_trans2 for decoder self, encoder and cross-attention).

How the prefix reaches attention: every transformers model of these families computes attention through
`ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`. Each prefixed attention module gets a view of its
config that names `peftbench_prefix`, which prepends the layer's P keys and values and hands over to the
model's own implementation (sdpa or eager). So, as in AdapterHub:
* the prefix is never written to the key/value cache: `generate` caches real tokens only and every step
  sees the prefix again; positions (RoPE, OPT's learned ones, T5's relative buckets) stay the base model's.
  (PEFT and Li & Liang's GPT-2 code pass the prefix as a cache, which moves OPT's positions by P.)
* every query may attend to every prefix position, whatever the padding or causal mask;
* T5's relative position bias is kept for real tokens and is zero for prefix keys. AdapterHub computes the
  bias over P + n key positions, which shifts every real distance by P; the prefix has no position.
Prefix states are computed once per stack forward (a pre-hook on the stack drops the previous ones).

UniPELT's prefix gate (Mao et al.) lives here too: sigmoid(w.x + b) of the attention's input x scales the
prefix keys and values. It is evaluated per query token (Mao and AdapterHub average it over the sequence,
which in a decoder lets earlier positions see later tokens): the head dimension is doubled so that one
attention call scores real keys with q and prefix keys with gate x q, and returns the two value sums apart.
"""

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pydantic import Field, field_validator
from torch import nn

from peftbench.architectures import STACKS, linear_roles, model_type
from peftbench.errors import UserError
from peftbench.methods.base import Method, Options, freeze, register
from peftbench.tuning.space import Axis

ATTENTION = "peftbench_prefix"
SITES = ("encoder", "decoder", "cross")
SUPPORTED = ("sdpa", "eager")  # masks of these two are prepended here; flash and flex keep their own formats


class PrefixNetwork(nn.Module):
    """One site's keys and values for each of its `layers` attention layers."""

    def __init__(self, tokens: int, layers: int, kv_heads: int, head_dim: int, d_model: int, hidden: int,
                 like: torch.Tensor):
        super().__init__()
        self.shape = (tokens, layers, 2, kv_heads, head_dim)
        width = layers * 2 * kv_heads * head_dim
        factory = {"device": like.device, "dtype": like.dtype}
        if hidden:
            self.embedding = nn.Embedding(tokens, d_model, **factory)
            self.mlp = nn.Sequential(nn.Linear(d_model, hidden, **factory), nn.Tanh(),
                                     nn.Linear(hidden, width, **factory))
        else:
            self.flat = nn.Parameter(torch.randn(tokens, width, **factory))
        self.states: torch.Tensor | None = None

    def refresh(self, *_) -> None:
        """Compute every layer's keys and values as the stack's forward starts, outside its layers: a layer
        that gradient checkpointing recomputes must find them, not build them inside its checkpoint again."""
        flat = self.mlp(self.embedding.weight) if hasattr(self, "mlp") else self.flat
        self.states = flat.view(self.shape).permute(1, 2, 3, 0, 4)  # layers, k/v, heads, P, head_dim

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of one layer, (kv_heads, P, head_dim) each, computed once per stack forward."""
        if self.states is None:
            self.refresh()
        return self.states[index, 0], self.states[index, 1]

    def __getstate__(self):
        return {**self.__dict__, "states": None}  # copies never carry a forward's tensors


class PrefixGate(nn.Linear):
    """UniPELT's prefix gate of one attention layer: Linear(d_model, 1), one gate for keys and values
    (AdapterHub's shared_gating; Mao et al.'s `prefix_gate`), initialised as both do: weights N(0, 0.02),
    zero bias, so every gate starts near 0.5."""

    def reset_parameters(self) -> None:
        init_gate(self)


def init_gate(gate: nn.Linear) -> None:
    """Mao et al.'s gates (BERT's init_weights, initializer_range 0.02) and AdapterHub's prefix gate."""
    nn.init.normal_(gate.weight, std=0.02)
    nn.init.zeros_(gate.bias)


@dataclass(eq=False)
class PrefixSlot:
    """What one prefixed attention module needs at call time."""

    network: PrefixNetwork
    index: int  # the module's layer among its site's layers
    eager: Callable  # the model file's own eager attention, the fallback transformers would use
    gate: PrefixGate | None = None
    gate_input: torch.Tensor | None = None  # the attention's input, stashed by a pre-hook for the gate

    def stash(self, module, args: tuple, kwargs: dict) -> None:
        self.gate_input = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]


class PrefixedConfig:
    """An attention module's view of the model config: everything as the model's, except that attention
    dispatches to `peftbench_prefix`. Reads and writes reach the model config, so a later change of the
    model's attention implementation is honoured (the prefix attention hands over to it)."""

    _attn_implementation = ATTENTION

    def __init__(self, config):
        self.__dict__["model_config"] = config

    def __getattr__(self, name: str):
        if "model_config" not in self.__dict__:  # while being copied
            raise AttributeError(name)
        return getattr(self.__dict__["model_config"], name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self.__dict__["model_config"], name, value)


def _visible_prefix(mask: torch.Tensor | None, module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                    tokens: int, is_causal: bool | None) -> torch.Tensor | None:
    """The attention mask with `tokens` prefix columns in front, open to every query. Without a mask sdpa
    would apply `is_causal` aligned to the top-left of the longer key axis, so causal attention gets an
    explicit mask (real keys aligned to the last query, as the cache aligns them)."""
    if mask is None:
        causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
        queries, keys = query.shape[2], key.shape[2]
        if not causal or queries == 1:
            return None
        mask = torch.ones(queries, keys, dtype=torch.bool, device=query.device).tril(keys - queries)[None, None]
    open_value = True if mask.dtype == torch.bool else 0.0
    return torch.cat([mask.new_full((*mask.shape[:-1], tokens), open_value), mask], dim=-1)


def _supported(config) -> str:
    implementation = config._attn_implementation
    if implementation not in SUPPORTED:
        raise UserError(f"prefix tuning runs on the sdpa or eager attention implementation, not"
                        f" '{implementation}'; load the model with attn_implementation='sdpa'")
    return implementation


def prefix_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, scaling: float | None = None, **kwargs):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    slot: PrefixSlot = module.prefix_slot
    implementation = _supported(module.config.model_config)
    delegate = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, slot.eager)
    prefix_keys, prefix_values = (t.to(key.dtype).expand(key.shape[0], -1, -1, -1) for t in slot.network.layer(slot.index))
    tokens = prefix_keys.shape[2]
    attention_mask = _visible_prefix(attention_mask, module, query, key, tokens, kwargs.get("is_causal"))
    if kwargs.get("position_bias") is not None:  # T5: no bias for the prefix, the model's own for real keys
        kwargs["position_bias"] = nn.functional.pad(kwargs["position_bias"], (tokens, 0))
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    if slot.gate is None:
        return delegate(module, query, torch.cat([prefix_keys, key], 2), torch.cat([prefix_values, value], 2),
                        attention_mask, scaling=scaling, **kwargs)
    # Per-query gate g on prefix keys and values in one call: [q, g q] . [0, pk] = g q.pk and
    # [q, g q] . [k, 0] = q.k; the values [0, pv] and [v, 0] come back as two halves, the first weighed by g.
    gate_input, slot.gate_input = slot.gate_input, None
    gate = torch.sigmoid(slot.gate(gate_input)).to(query.dtype)  # batch, queries, 1
    keys = torch.cat([torch.cat([torch.zeros_like(prefix_keys), prefix_keys], -1),
                      torch.cat([key, torch.zeros_like(key)], -1)], 2)
    values = torch.cat([torch.cat([torch.zeros_like(prefix_values), prefix_values], -1),
                        torch.cat([value, torch.zeros_like(value)], -1)], 2)
    queries = torch.cat([query, query * gate.transpose(1, 2).unsqueeze(-1)], -1)
    output, weights = delegate(module, queries, keys, values, attention_mask, scaling=scaling, **kwargs)
    real, prefix = output.split(value.shape[-1], dim=-1)  # batch, queries, heads, head_dim
    return real + gate.unsqueeze(-1) * prefix, weights


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, prefix_attention)


@dataclass(frozen=True)
class Site:
    kind: str  # encoder | decoder | cross
    attention: list[str]  # attention module names, in layer order
    owner: str  # the module whose forward runs the site's layers (T5Stack, LlamaModel, BertEncoder, ...)


def attention_sites(model: nn.Module, family: str) -> dict[str, Site]:
    """The model's prefix sites: its attention modules by kind, found from their query projections."""
    first_stack = STACKS[model_type(model)][0]
    found: dict[str, list] = {}
    for role in linear_roles(model):
        if role.projection != "q" or role.kind == "ffn":
            continue
        if role.kind == "cross_attn":
            kind = "cross"
        elif family == "seq2seq":
            kind = "encoder" if role.stack == first_stack else "decoder"
        else:
            kind = "encoder" if family == "encoder" else "decoder"
        match = re.search(rf"(?:^|\.){re.escape(role.stack)}\.\d+\.", role.name)
        owner = role.name[:match.end() - 1].rpartition(".")[0].rpartition(".")[0]
        found.setdefault(kind, []).append((role.layer, role.name.rpartition(".")[0], owner))
    return {kind: Site(kind, [name for _, name, _ in sorted(entries)], entries[0][2])
            for kind, entries in found.items()}


def _dimensions(model: nn.Module, attention_name: str) -> tuple[int, int, int]:
    """(d_model, key/value heads, head dim) of an attention module, from its key projection."""
    attention = model.get_submodule(attention_name)
    key = next(role for role in linear_roles(model) if role.name.startswith(attention_name + ".")
               and role.projection == "k")
    linear = model.get_submodule(key.name)
    head_dim = next(getattr(attention, a) for a in ("head_dim", "key_value_proj_dim", "attention_head_size")
                    if hasattr(attention, a))
    return linear.in_features, linear.out_features // head_dim, head_dim


def chosen_sites(text: str, available: dict[str, Site]) -> list[Site]:
    wanted = list(available) if text == "all" else list(dict.fromkeys(text.split("+")))
    missing = [kind for kind in wanted if kind not in available]
    if missing:
        raise UserError(f"sites='{text}': this model has no '{missing[0]}' attention; its sites are"
                        f" {', '.join(available)} (or sites=all)")
    return [available[kind] for kind in wanted]


def add_prefix(model: nn.Module, family: str, tokens: int, hidden: int, sites: str, gated: bool = False) -> None:
    """Give each chosen site its prefix network (trainable, under `prefix_sites`), and each of its attention
    modules the prefix attention; `gated`: each also gets UniPELT's trainable prefix gate."""
    _supported(model.config)
    _register_attention()
    networks = nn.ModuleDict()
    for site in chosen_sites(sites, attention_sites(model, family)):
        d_model, kv_heads, head_dim = _dimensions(model, site.attention[0])
        like = next(model.get_submodule(site.attention[0]).parameters())
        network = PrefixNetwork(tokens, len(site.attention), kv_heads, head_dim, d_model, hidden, like)
        networks[site.kind] = network
        model.get_submodule(site.owner).register_forward_pre_hook(network.refresh)
        for index, name in enumerate(site.attention):
            attention = model.get_submodule(name)
            eager = getattr(sys.modules[type(attention).__module__], "eager_attention_forward", None)
            if eager is None or not hasattr(attention, "config"):
                raise UserError(f"prefix tuning does not know how {type(attention).__name__} attends; it supports"
                                " T5, Llama/Mistral/Qwen2, OPT and BERT/RoBERTa attention")
            slot = PrefixSlot(network, index, eager)
            if gated:
                attention.prefix_gate = slot.gate = PrefixGate(d_model, 1, device=like.device, dtype=like.dtype)
                attention.register_forward_pre_hook(slot.stash, with_kwargs=True)
            attention.prefix_slot = slot
            attention.config = PrefixedConfig(attention.config)
    model.prefix_sites = networks


def owns_prefix(name: str) -> bool:
    return name.startswith("prefix_sites.") or ".prefix_sites." in name or ".prefix_gate." in name


class PrefixTuningOptions(Options):
    tokens: int = Field(20, ge=1)
    # Width of Li & Liang's MLP, their remedy for unstable direct training (AdapterHub's bottleneck_size);
    # 0 trains the keys and values directly (AdapterHub's flat=True).
    hidden: int = Field(512, ge=0)
    sites: str = "all"  # encoder, decoder, cross joined by '+', or all the model has

    @field_validator("sites")
    @classmethod
    def _known_sites(cls, text: str) -> str:
        unknown = [kind for kind in text.split("+") if kind not in SITES] if text != "all" else []
        if unknown:
            raise ValueError(f"unknown site '{unknown[0]}'; use all or {', '.join(SITES)} joined by '+'")
        return text


def _prefix_tuning(model: nn.Module, options: PrefixTuningOptions, context) -> nn.Module:
    freeze(model)
    add_prefix(model, context.family, options.tokens, options.hidden, options.sites)
    return model


# The adapters' learning rates (and MAM's and UniPELT's, whose prefix this is): 3e-4, warm-up to 10x. Prompt
# tuning's 3e-3 warmed up to 100x peaks at 0.3, where the MLP's prefix does not learn: 0.17 accuracy on MiniLM,
# bbc_topic, 100 examples (5 labels), against 0.89 with the same peak of 3e-3 as here (docs/prefix-tuning.md).
register(Method(name="prefix_tuning", summary="prefix tuning (Li & Liang 2021): per-layer key/value prefixes"
                " at every attention site, from a trained MLP or flat", options=PrefixTuningOptions,
                apply=_prefix_tuning, owns=owns_prefix, default_lr=3e-4, taxonomy="additive",
                # Li & Liang (section 7.2): 200 prefix tokens for summarisation, 10 for table-to-text
                tuning_axes=(Axis("tokens", choices=(5, 10, 20, 50)),),
                reference="Li & Liang 2021; AdapterHub PrefixTuningConfig (methods/prefix_tuning.py)"))
