"""T-Few's (IA)3 (Liu et al. 2022, in the layout of the T-Few code that Pu et al. ran): the outputs of keys,
values and of the FFN's un-gated in-branch, scaled through T-Few's LoRA-with-scaling layer. It is the `ia3`
method with `layout=tfew` (peft_methods.py registers `ia3`, whose default layout is HF PEFT's): the options
and run ids are unchanged; only the code lives in its own module."""

from torch import nn

from peftbench.architectures import LinearRole
from peftbench.methods.adapted import ScaledLoraLinear, wrap_layers
from peftbench.methods.base import AblationOptions, Context, freeze


# The activation-gated half of a gated FFN's input (T5 v1.1 wi_0, Llama gate_proj); the other half (wi_1,
# up_proj) is the linear branch whose output multiplies the activation.
GATED_BRANCHES = ("wi_0", "gate_proj")


def is_tfew_ia3_target(role: LinearRole) -> bool:
    """T-Few's (IA)3 targets: keys, values and the FFN "in" branch that is not activation-gated (wi_1 on gated
    T5, wi on plain T5, up_proj on Llama, fc1 on OPT, intermediate.dense on BERT); their outputs are scaled,
    so on gated FFNs this rescales the hidden FFN activation exactly as Liu et al. describe."""
    return role.projection in ("k", "v") or (role.kind == "ffn" and role.projection == "in"
                                             and not role.name.endswith(GATED_BRANCHES))


def apply_tfew_ia3(model: nn.Module, options: AblationOptions, context: Context) -> nn.Module:
    """T-Few's (IA)3 as Pu et al. ran it: T-Few's LoRA layer with rank 0 and scaling rank 1, which allocates
    an input and an output scaling vector per layer but trains only the output one (`.*lora_b.*`). The
    frozen input vectors (all ones) are why Pu et al. count 933,888 parameters on FLAN-T5-XL, 540,672 trained.
    A layer's bias (BERT, OPT) is scaled with its output, (W x + b) * l, as T-Few's rank-0 path computes it."""
    names = context.select(model, options, is_tfew_ia3_target)
    freeze(model)
    wrap_layers(model, names, lambda name, linear: ScaledLoraLinear(linear, r=1, s=1, parts={"scaling_in", "scaling_out"},
                                                                   init_scale=0.0))
    for name, parameter in model.named_parameters():
        if name.endswith("multi_lora_a"):
            parameter.requires_grad_(False)
    return model
