"""P-tuning (Liu et al. 2021, as Hamilton & Mueller ran it): soft prompts produced by a trained prompt
encoder, through HF PEFT. It also works on encoders: PEFT's feature-extraction model takes it, and
peftbench's MeanPoolClassifier pools the last input-length positions, which are the real tokens (the
virtual tokens are prepended). Prefix tuning is peftbench's own (methods/prefix.py)."""

from typing import Literal

from pydantic import Field

from peftbench.methods.base import Method, Options, register
from peftbench.methods.peft_methods import PROMPT_TOKENS, TASK_TYPES, _wrap


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
                                            # The width of the token embeddings the prompts join: PEFT's default,
                                            # the model's hidden size, is 1024 on OPT-350m, whose embeddings are 512.
                                            token_dim=model.get_input_embeddings().embedding_dim,
                                            encoder_reparameterization_type=kind[options.encoder],
                                            num_transformer_submodules=1))


# Learning rates as for prompt tuning (Pu et al. A.3): 3e-3, warm-up to 100x, anneal to 10x.
register(Method(name="p_tuning", summary="P-tuning (Liu et al. 2021): virtual tokens from a trained prompt encoder",
                options=PTuningOptions, apply=_p_tuning, owns=lambda name: "prompt_encoder" in name,
                default_lr=3e-3, peak_factor=100.0, final_factor=10.0, virtual_tokens=lambda options: options.tokens,
                source="HF PEFT", taxonomy="additive", tuning_axes=(PROMPT_TOKENS,),
                reference="Liu et al. 2021; HF PEFT PromptEncoderConfig (tuners/p_tuning)"))
