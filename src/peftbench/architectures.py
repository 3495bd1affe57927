"""One place that knows where things are in each architecture: the layer stacks and the role of every
linear layer (self-attention, cross-attention or feed-forward; which projection). Method targets and
the layer/module ablations (`layers=`, `modules=`, `drop=`) are resolved here, so the same names work
on T5, Llama/OPT-style decoders and BERT-style encoders."""

import random
import re
from dataclasses import dataclass

from torch import nn

from peftbench.errors import UserError
from peftbench.registry import did_you_mean

# Per model type: (pattern on the path inside one layer, kind, projection). Projections: q k v o for
# attention; in / out for the feed-forward block (in = up/gate/wi, out = down/wo).
ROLE_PATTERNS: dict[str, list[tuple[str, str, str]]] = {
    "t5": [(r"SelfAttention\.(?P<p>[qkvo])$", "self_attn", ""), (r"EncDecAttention\.(?P<p>[qkvo])$", "cross_attn", ""),
           (r"DenseReluDense\.wi(_0|_1)?$", "ffn", "in"), (r"DenseReluDense\.wo$", "ffn", "out")],
    "llama": [(r"self_attn\.(?P<p>[qkvo])_proj$", "self_attn", ""), (r"mlp\.(gate|up)_proj$", "ffn", "in"),
              (r"mlp\.down_proj$", "ffn", "out")],
    "opt": [(r"self_attn\.(?P<p>[qkv])_proj$", "self_attn", ""), (r"self_attn\.out_proj$", "self_attn", "o"),
            (r"^fc1$", "ffn", "in"), (r"^fc2$", "ffn", "out")],
    "bert": [(r"attention\.self\.query$", "self_attn", "q"), (r"attention\.self\.key$", "self_attn", "k"),
             (r"attention\.self\.value$", "self_attn", "v"), (r"attention\.output\.dense$", "self_attn", "o"),
             (r"^intermediate\.dense$", "ffn", "in"), (r"^output\.dense$", "ffn", "out")],
}
ROLE_PATTERNS["mistral"] = ROLE_PATTERNS["qwen2"] = ROLE_PATTERNS["llama"]
ROLE_PATTERNS["roberta"] = ROLE_PATTERNS["bert"]
STACKS = {"t5": ("encoder.block", "decoder.block"), "llama": ("layers",), "opt": ("decoder.layers",),
          "bert": ("encoder.layer",)}
STACKS["mistral"] = STACKS["qwen2"] = STACKS["llama"]
STACKS["roberta"] = STACKS["bert"]
MODULE_GROUPS = ("self_attn", "cross_attn", "attn_qo", "attn_kv", "ffn")


def layer_modules(model: nn.Module) -> list[nn.Module]:
    """The transformer layers of a model (its STACKS), found by their path suffix, so also under a wrapper:
    the units a gradient checkpoint recomputes and FSDP shards one at a time."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    stacks = STACKS.get(kind, ())
    found = []
    for name, module in model.named_modules():
        parent, _, index = name.rpartition(".")
        if index.isdigit() and any(parent == s or parent.endswith("." + s) for s in stacks):
            found.append(module)
    return found


@dataclass(frozen=True)
class LinearRole:
    name: str  # full module path in the model as given
    stack: str  # e.g. "encoder.block"
    layer: int
    kind: str  # self_attn | cross_attn | ffn
    projection: str  # q k v o | in out

    def in_group(self, group: str) -> bool:
        if group in ("self_attn", "cross_attn", "ffn"):
            return self.kind == group
        return self.kind != "ffn" and self.projection in ({"q", "o"} if group == "attn_qo" else {"k", "v"})


def model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in ROLE_PATTERNS:
        raise UserError(f"layer/module selection does not know architecture '{kind}'; known: "
                        f"{', '.join(sorted(ROLE_PATTERNS))} (use explicit targets=... instead)")
    return kind


def linear_roles(model: nn.Module) -> list[LinearRole]:
    """Every linear layer inside the transformer layers, with its stack, layer index, kind and projection."""
    kind = model_type(model)
    roles = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        for stack in STACKS[kind]:
            match = re.search(rf"(^|\.){re.escape(stack)}\.(\d+)\.(.+)$", name)
            if not match:
                continue
            inner = match.group(3)
            for pattern, role_kind, projection in ROLE_PATTERNS[kind]:
                found = re.search(pattern, inner)
                if found:
                    roles.append(LinearRole(name, stack, int(match.group(2)), role_kind,
                                            projection or found.groupdict().get("p") or ""))
                    break
    return roles


def stack_depths(roles: list[LinearRole]) -> dict[str, int]:
    depths: dict[str, int] = {}
    for role in roles:
        depths[role.stack] = max(depths.get(role.stack, 0), role.layer + 1)
    return depths


def parse_layers(spec: str, depth: int, seed: int | str) -> list[int]:
    """`all`, `early` / `later` (first / second half), `random` (half, drawn with the run seed) or a list
    such as `0,1,5-7`; applied to each stack of the model."""
    if spec == "all":
        return list(range(depth))
    if spec == "early":
        return list(range(depth // 2))
    if spec == "later":
        return list(range(depth // 2, depth))
    if spec == "random":
        return sorted(random.Random(seed).sample(range(depth), depth // 2))
    chosen: set[int] = set()
    for part in spec.replace("+", ",").split(","):
        start, _, end = part.strip().partition("-")
        if not start.isdigit() or (end and not end.isdigit()):
            raise UserError(f"layers='{spec}' is not understood; use all, early, later, random or a list like 0,1,5-7")
        chosen.update(range(int(start), int(end or start) + 1))
    outside = sorted(i for i in chosen if i >= depth)
    if outside:
        raise UserError(f"layers='{spec}' asks for layer {outside[0]} but the model has {depth} layers per stack"
                        f" (0-{depth - 1}); use indices below {depth}")
    return sorted(chosen)


def _check_groups(groups: list[str]) -> None:
    for group in groups:
        if group not in MODULE_GROUPS:
            raise UserError(f"unknown module group '{group}'.{did_you_mean(group, list(MODULE_GROUPS))}"
                            f" Groups: {', '.join(MODULE_GROUPS)}")


@dataclass(frozen=True)
class Selection:
    """The ablation part of a method spec: which layers and which module groups a method may touch."""

    layers: str = "all"
    modules: tuple[str, ...] = ()  # empty: every group
    drop: tuple[str, ...] = ()

    def apply(self, roles: list[LinearRole], seed: int) -> tuple[list[LinearRole], dict[str, list[int]]]:
        """The roles kept, and the layers chosen per stack (recorded with the run, e.g. for `random`)."""
        _check_groups([*self.modules, *self.drop])
        # Each stack draws its own random half (seeded by run seed and stack name), as Pu et al. ablate per stack.
        layers = {stack: parse_layers(self.layers, depth, f"{seed}/{stack}") for stack, depth in stack_depths(roles).items()}
        kept = [role for role in roles if role.layer in layers[role.stack]
                and (not self.modules or any(role.in_group(g) for g in self.modules))
                and not any(role.in_group(g) for g in self.drop)]
        return kept, layers


def feed_forward_residual(model: nn.Module, role: LinearRole) -> tuple[str, str | None]:
    """Where the residual stream of an FFN sublayer is, for adapters that read it (AdapterHub's SeqBn and
    ParBn): the module whose first input is the stream entering the FFN sublayer, and the norm applied after
    the FFN's residual add (post-LN models: BERT, OPT-350m), or None (pre-LN: T5, Llama, OPT-125m). `role`
    is the FFN's output projection. Pre-LN models normalise the stream before the FFN, so the stream is the
    input of that norm; post-LN ones feed it to the FFN's input projection as it is."""
    kind, name = model_type(model), role.name
    if kind == "t5":  # T5LayerFF: x + dropout(DenseReluDense(layer_norm(x)))
        return name.removesuffix("DenseReluDense.wo") + "layer_norm", None
    if kind in ("llama", "mistral", "qwen2"):
        return name.removesuffix("mlp.down_proj") + "post_attention_layernorm", None
    if kind == "opt":
        layer = name.removesuffix("fc2")
        if model.config.do_layer_norm_before:
            return layer + "final_layer_norm", None
        return layer + "fc1", layer + "final_layer_norm"
    # BERT / RoBERTa: BertOutput computes LayerNorm(dropout(dense(h)) + x) with x the FFN's input.
    layer = name.removesuffix("output.dense")
    return layer + "intermediate.dense", layer + "output.LayerNorm"
