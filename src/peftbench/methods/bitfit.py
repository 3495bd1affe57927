"""BitFit (Zaken et al. 2021): train only the bias terms. T5 and Llama have none, so, as Pu et al. did
for T5, `add_bias=true` first gives the bias-less linear layers of the transformer a zero bias."""

import torch
from torch import nn

from peftbench.errors import UserError
from peftbench.methods.base import AblationOptions, Method, freeze, keep_model, register


class BitFitOptions(AblationOptions):
    add_bias: bool = False


def _apply(model: nn.Module, options: BitFitOptions, context) -> nn.Module:
    modules = dict(model.named_modules())
    if options.add_bias:
        for name in context.select(model, options, keep=lambda role: modules[role.name].bias is None,
                                   required=False):
            linear = modules[name]
            linear.bias = nn.Parameter(torch.zeros(linear.out_features, dtype=linear.weight.dtype,
                                                   device=linear.weight.device))
    freeze(model)
    ablated = options.selection() != AblationOptions().selection()
    # With a layer/module ablation only the chosen linear layers' biases train; otherwise every bias does.
    allowed = set(context.select(model, options, keep=lambda role: True)) if ablated else None
    biases = [parameter for name, parameter in model.named_parameters() if name.endswith("bias")
              and (allowed is None or name.removesuffix(".bias") in allowed)]
    if not biases:
        raise UserError("bitfit: the model has no bias terms; use bitfit[add_bias=true]")
    for parameter in biases:
        parameter.requires_grad_(True)
    return model


def _added_biases(model: nn.Module, base_ids: set[int]) -> int:
    """Merged, an added zero bias becomes a new base entry; trained existing biases are counted already."""
    return sum(p.numel() for name, p in model.named_parameters() if name.endswith("bias") and id(p) not in base_ids)


register(Method(name="bitfit", summary="BitFit: train bias terms only (add_bias=true adds zero biases)",
                options=BitFitOptions, apply=_apply, owns=lambda name: name.endswith("bias"), default_lr=3e-4,
                merge=keep_model, changed_by_merge=_added_biases, identity_init=True, taxonomy="selective",
                reference="Ben Zaken et al. 2021"))
