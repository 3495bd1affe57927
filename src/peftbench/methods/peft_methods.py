"""Methods that Hugging Face PEFT implements faithfully: LoRA, (IA)3, prompt tuning, LayerNorm tuning."""

from typing import Literal

from pydantic import Field
from torch import nn

from peftbench.methods.base import Method, Options, register

TASK_TYPES = {"encoder": "FEATURE_EXTRACTION", "decoder": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}


def _targets(value: str | list[str] | None) -> list[str] | str | None:
    """`q+v` or a YAML list -> module names; `all-linear` passes through; None keeps PEFT's default."""
    if value is None or isinstance(value, list) or value == "all-linear":
        return value
    return [name for name in value.split("+") if name]


def _wrap(model: nn.Module, config) -> nn.Module:
    from peft import get_peft_model

    return get_peft_model(model, config)


class LoraOptions(Options):
    r: int = Field(8, ge=1)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: str | None = None  # e.g. q+v, all-linear; default: PEFT's per-architecture query/value


def _lora(model, family, options: LoraOptions):
    from peft import LoraConfig

    return _wrap(model, LoraConfig(task_type=TASK_TYPES[family], r=options.r, lora_alpha=options.alpha,
                                           lora_dropout=options.dropout, target_modules=_targets(options.targets)))


class IA3Options(Options):
    targets: str | None = None
    feedforward: str | None = None  # which targets scale their input (feed-forward) instead of the output


def _ia3(model, family, options: IA3Options):
    from peft import IA3Config

    return _wrap(model, IA3Config(task_type=TASK_TYPES[family], target_modules=_targets(options.targets),
                                          feedforward_modules=_targets(options.feedforward)))


class PromptTuningOptions(Options):
    tokens: int = Field(20, ge=1)
    init: Literal["sample_vocab", "random"] = "sample_vocab"


def _prompt_tuning(model, family, options: PromptTuningOptions):
    from peft import PromptTuningConfig, PromptTuningInit

    # Starting from embeddings of sampled vocabulary tokens trains faster than noise (Lester et al. 2021).
    init = PromptTuningInit.SAMPLE_VOCAB if options.init == "sample_vocab" else PromptTuningInit.RANDOM
    # One prompt, on the encoder input (Lester et al.): PEFT's seq2seq default would also allocate a decoder
    # prompt that its prompt-tuning forward never uses, doubling the trainable count for nothing.
    return _wrap(model, PromptTuningConfig(task_type=TASK_TYPES[family], num_virtual_tokens=options.tokens,
                                           prompt_tuning_init=init, num_transformer_submodules=1))


def norm_module_names(model: nn.Module) -> list[str]:
    """Every normalisation layer (LayerNorm, RMSNorm, T5's LayerNorm) found by class name, so the method
    needs no per-architecture table."""
    return [name for name, module in model.named_modules()
            if name and type(module).__name__.lower().endswith(("layernorm", "rmsnorm", "norm"))
            and any(True for _ in module.parameters(recurse=False))]


def _ln_tuning(model, family, options: Options):
    from peft import LNTuningConfig

    return _wrap(model, LNTuningConfig(task_type=TASK_TYPES[family], target_modules=norm_module_names(model)))


register(Method(name="lora", summary="LoRA (Hu et al. 2021): low-rank updates of attention weights",
                options=LoraOptions, apply=_lora, default_lr=3e-4, mergeable=True, source="HF PEFT"))
register(Method(name="ia3", summary="(IA)3 (Liu et al. 2022): learned rescaling of keys, values and FFN",
                options=IA3Options, apply=_ia3, default_lr=3e-4, mergeable=True, source="HF PEFT"))
register(Method(name="prompt_tuning", summary="prompt tuning (Lester et al. 2021): trained soft-prompt tokens",
                options=PromptTuningOptions, apply=_prompt_tuning, default_lr=3e-3, peak_factor=100.0,
                final_factor=10.0, source="HF PEFT"))
register(Method(name="ln_tuning", summary="LayerNorm tuning (Zhao et al. 2023): train normalisation layers",
                options=Options, apply=_ln_tuning, default_lr=3e-4, mergeable=True, source="HF PEFT"))
