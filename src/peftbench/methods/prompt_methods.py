"""Soft prompts produced by a trained network, through HF PEFT: prefix tuning (Li & Liang 2021) and P-tuning
(Liu et al. 2021, as Hamilton & Mueller ran it). Both also work on encoders: PEFT's feature-extraction model
takes them, and peftbench's MeanPoolClassifier pools the last input-length positions, which are the real
tokens (prefix tuning adds keys and values, not positions; P-tuning prepends its virtual tokens)."""

from typing import Literal

from pydantic import Field

from peftbench.methods.base import Method, Options, register
from peftbench.methods.peft_methods import TASK_TYPES, _wrap


class PrefixTuningOptions(Options):
    tokens: int = Field(20, ge=1)
    hidden: int = Field(512, ge=1)  # width of the MLP that maps the prefix embedding to every layer's keys/values


def prefix_config(model, family: str, tokens: int, hidden: int):
    """PEFT's prefix tuning config; `hidden` > 0 adds Li & Liang's MLP reparametrisation, their remedy for
    unstable direct training. On T5, PEFT with transformers 5 puts the prefix on the decoder's self-attention
    only: T5's encoder takes no past keys/values, and the cross-attention copy PEFT builds is not used.
    Decoders and encoders get it in every layer's self-attention."""
    from peft import PrefixTuningConfig

    extra = {"prefix_projection": True, "encoder_hidden_size": hidden} if hidden else {}
    config = model.config
    if hasattr(config, "d_kv"):
        # T5's keys are heads x d_kv wide, which is not d_model on T5-3B/11B; PEFT would size them by d_model.
        extra["token_dim"] = config.num_heads * config.d_kv
    return PrefixTuningConfig(task_type=TASK_TYPES[family], num_virtual_tokens=tokens, **extra)


def _prefix_tuning(model, options: PrefixTuningOptions, context):
    return _wrap(model, prefix_config(model, context.family, options.tokens, options.hidden))


class PTuningOptions(Options):
    tokens: int = Field(20, ge=1)
    encoder_hidden: int = Field(128, ge=1)  # hidden width of the prompt encoder
    encoder: Literal["mlp", "lstm"] = "mlp"  # PEFT's default MLP, or the bidirectional LSTM of Liu et al.


def _p_tuning(model, options: PTuningOptions, context):
    from peft import PromptEncoderConfig, PromptEncoderReparameterizationType

    kind = {"mlp": PromptEncoderReparameterizationType.MLP, "lstm": PromptEncoderReparameterizationType.LSTM}
    # One set of virtual tokens, on the encoder input: PEFT's seq2seq default allocates a decoder set that
    # its P-tuning forward never uses (as with prompt tuning).
    return _wrap(model, PromptEncoderConfig(task_type=TASK_TYPES[context.family], num_virtual_tokens=options.tokens,
                                            encoder_hidden_size=options.encoder_hidden,
                                            encoder_reparameterization_type=kind[options.encoder],
                                            num_transformer_submodules=1))


# Learning rates as for prompt tuning (Pu et al. A.3): 3e-3, warm-up to 100x, anneal to 10x.
register(Method(name="prefix_tuning", summary="prefix tuning (Li & Liang 2021): per-layer key/value prefixes"
                " from a trained MLP", options=PrefixTuningOptions, apply=_prefix_tuning,
                owns=lambda name: "prompt_encoder" in name, default_lr=3e-3, peak_factor=100.0, final_factor=10.0,
                source="HF PEFT"))
register(Method(name="p_tuning", summary="P-tuning (Liu et al. 2021): virtual tokens from a trained prompt encoder",
                options=PTuningOptions, apply=_p_tuning, owns=lambda name: "prompt_encoder" in name,
                default_lr=3e-3, peak_factor=100.0, final_factor=10.0, virtual_tokens=lambda options: options.tokens,
                source="HF PEFT"))
