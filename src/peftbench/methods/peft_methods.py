"""Methods that Hugging Face PEFT implements faithfully: LoRA, (IA)3, prompt tuning, LayerNorm tuning.
peftbench picks the target layers itself (architectures.py), so targets and ablations mean the same
thing on every architecture, and hands PEFT the full module names."""

from collections.abc import Callable
from typing import ClassVar, Literal

from pydantic import Field
from torch import nn

from peftbench.architectures import LinearRole, linear_roles
from peftbench.errors import UserError
from peftbench.methods.adapted import merge_adapted
from peftbench.methods.base import AblationOptions, Method, Options, register
from peftbench.methods.tfew_ia3 import apply_tfew_ia3
from peftbench.tuning.space import Axis

TASK_TYPES = {"encoder": "FEATURE_EXTRACTION", "decoder": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}
PROJECTIONS = {"q", "k", "v", "o", "in", "out"}
# The ranks Hu et al. (Table 6) and PEFT's method comparison try; the update's scale alpha / r moves with r.
LORA_RANKS = Axis("r", choices=(4, 8, 16, 32))
# Lester et al. (Figure 3) try 1 to 150 tokens and find little gained past 20.
PROMPT_TOKENS = Axis("tokens", choices=(5, 10, 20, 50))


def _wrap(model: nn.Module, config) -> nn.Module:
    from peft import get_peft_model

    return get_peft_model(model, config)


def peft_merge(model: nn.Module) -> nn.Module:
    return model.merge_and_unload()


def target_filter(targets: str) -> Callable[[LinearRole], bool]:
    """`qv` (default), `all-linear`, or projections joined by '+': q, k, v, o (attention), in, out (FFN)."""
    if targets == "all-linear":
        return lambda role: True
    wanted = set(targets) if targets.isalpha() and set(targets) <= set("qkvo") else set(targets.split("+"))
    unknown = wanted - PROJECTIONS
    if unknown:
        raise UserError(f"targets='{targets}': unknown projection '{sorted(unknown)[0]}'; use qv, all-linear or"
                        " projections joined by '+' from q, k, v, o, in, out")
    return lambda role: role.projection in wanted


# PEFT's init_lora_weights for each `init`: Hu et al.'s (A Kaiming-uniform, B zero); gaussian (A ~ N(0, 1/r),
# B zero); PiSSA (Meng et al. 2024: B and A from W's top r singular triplets, the base keeping the rest of W);
# OLoRA (Büyükakyüz 2024: from the QR factors of W, the base keeping W minus their product). Each starts as the
# base model's function; PiSSA and OLoRA do so by rewriting the frozen weights they sit on.
LORA_INITS = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora"}


class LoraOptions(AblationOptions):
    r: int = Field(8, ge=1)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: str = "qv"
    init: Literal["default", "gaussian", "pissa", "olora"] = "default"
    rslora: bool = False  # rsLoRA (Kalajdzievski 2023): the update scaled by alpha / sqrt(r), not alpha / r
    b_lr_ratio: float = Field(1.0, ge=1)  # LoRA+ (Hayou et al. 2024): B's learning rate over A's; they suggest 16
    added_later: ClassVar[frozenset[str]] = frozenset({"init", "rslora", "b_lr_ratio"})


def lora_apply(model, options: LoraOptions, context, use_dora: bool = False):
    from peft import LoraConfig

    names = context.select(model, options, target_filter(options.targets))
    context.fit_rank(model, names, options.r, "r")
    return _wrap(model, LoraConfig(task_type=TASK_TYPES[context.family], r=options.r, lora_alpha=options.alpha,
                                   lora_dropout=options.dropout, target_modules=names, use_dora=use_dora,
                                   init_lora_weights=LORA_INITS[options.init], use_rslora=options.rslora))


def loraplus_factors(options: LoraOptions) -> Callable[[str, nn.Parameter], float] | None:
    """LoRA+ as PEFT groups it (peft/optimizers/loraplus.py): every B matrix and every 1-d trained tensor (biases,
    as of a classification head) at b_lr_ratio times the learning rate, the A matrices and the rest at 1x."""
    if options.b_lr_ratio == 1:
        return None
    return lambda name, parameter: options.b_lr_ratio if "lora_B" in name or parameter.ndim == 1 else 1.0


class IA3Options(AblationOptions):
    # liu: PEFT's layout (keys, values, and the input of the FFN output projection). tfew: the layout of the
    # T-Few code that Pu et al. used: the outputs of keys, values and of the FFN's un-gated "in" branch.
    layout: Literal["liu", "tfew"] = "liu"


def _is_ia3_target(role: LinearRole) -> bool:
    # Liu et al. 2022: rescale keys and values, and the input of the feed-forward output projection.
    return role.projection in ("k", "v") or (role.kind == "ffn" and role.projection == "out")


def _ia3(model, options: IA3Options, context):
    if options.layout == "tfew":
        return apply_tfew_ia3(model, options, context)
    from peft import IA3Config

    names = context.select(model, options, _is_ia3_target)
    ffn = {role.name for role in linear_roles(model) if role.kind == "ffn"}
    # PEFT scales a module's input when it is listed as feed-forward, its output otherwise.
    return _wrap(model, IA3Config(task_type=TASK_TYPES[context.family], target_modules=names,
                                  feedforward_modules=[name for name in names if name in ffn]))


def _ia3_merge(model: nn.Module) -> nn.Module:
    return peft_merge(model) if hasattr(model, "merge_and_unload") else merge_adapted(model)


class PromptTuningOptions(Options):
    tokens: int = Field(20, ge=1)
    init: Literal["sample_vocab", "random"] = "sample_vocab"


def _prompt_tuning(model, options: PromptTuningOptions, context):
    from peft import PromptTuningConfig, PromptTuningInit

    # Starting from embeddings of sampled vocabulary tokens trains faster than noise (Lester et al. 2021).
    init = PromptTuningInit.SAMPLE_VOCAB if options.init == "sample_vocab" else PromptTuningInit.RANDOM
    # One prompt, on the encoder input (Lester et al.): PEFT's seq2seq default would also allocate a decoder
    # prompt that its prompt-tuning forward never uses, doubling the trainable count for nothing.
    return _wrap(model, PromptTuningConfig(task_type=TASK_TYPES[context.family], num_virtual_tokens=options.tokens,
                                           prompt_tuning_init=init, num_transformer_submodules=1))


def norm_module_names(model: nn.Module) -> list[str]:
    """Every normalisation layer (LayerNorm, RMSNorm, T5's LayerNorm) found by class name, so the method
    needs no per-architecture table."""
    return [name for name, module in model.named_modules()
            if name and type(module).__name__.lower().endswith(("layernorm", "rmsnorm", "norm"))
            and any(True for _ in module.parameters(recurse=False))]


def _ln_tuning(model, options: Options, context):
    from peft import LNTuningConfig

    return _wrap(model, LNTuningConfig(task_type=TASK_TYPES[context.family], target_modules=norm_module_names(model)))


register(Method(name="lora", summary="LoRA (Hu et al. 2021): low-rank updates of attention weights",
                options=LoraOptions, apply=lora_apply, owns=lambda name: "lora_" in name, default_lr=3e-4,
                merge=peft_merge, identity_init=True, learning_rate_factors=loraplus_factors, source="HF PEFT",
                taxonomy="reparametrization", tuning_axes=(LORA_RANKS,),
                reference="Hu et al. 2021; HF PEFT LoraConfig (tuners/lora); its options init, rslora, b_lr_ratio:"
                          " docs/methods.md"))
register(Method(name="ia3", summary="(IA)3 (Liu et al. 2022): learned rescaling of keys, values and FFN",
                options=IA3Options, apply=_ia3, owns=lambda name: "ia3_" in name or name.endswith("multi_lora_b"),
                default_lr=3e-4, merge=_ia3_merge, identity_init=True, source="HF PEFT", taxonomy="additive",
                reference="Liu et al. 2022; HF PEFT IA3Config (tuners/ia3); layout=tfew: T-Few"))
register(Method(name="prompt_tuning", summary="prompt tuning (Lester et al. 2021): trained soft-prompt tokens",
                options=PromptTuningOptions, apply=_prompt_tuning, owns=lambda name: "prompt_encoder" in name,
                default_lr=3e-3, peak_factor=100.0, final_factor=10.0, virtual_tokens=lambda options: options.tokens,
                source="HF PEFT", taxonomy="additive", tuning_axes=(PROMPT_TOKENS,),
                reference="Lester et al. 2021; HF PEFT PromptTuningConfig (tuners/prompt_tuning)"))
def _norm_parameters(model: nn.Module, base_ids: set[int]) -> int:
    """Merging LN tuning swaps in the trained copies: every weight and bias of each tuned norm changes."""
    return sum(p.numel() for module in model.modules() if hasattr(module, "ln_tuning_layers")
               for p in module.base_layer.parameters())


register(Method(name="ln_tuning", summary="LayerNorm tuning (Zhao et al. 2023): train normalisation layers",
                options=Options, apply=_ln_tuning, owns=lambda name: "ln_tuning_layers" in name, default_lr=3e-4,
                merge=peft_merge, changed_by_merge=_norm_parameters, identity_init=True, source="HF PEFT",
                taxonomy="selective", reference="Zhao et al. 2023; HF PEFT LNTuningConfig (tuners/ln_tuning)"))
