"""BitFit (Zaken et al. 2021): train only the bias terms. T5 and Llama have none, so, as Pu et al. did
for T5, `add_bias=true` first gives every bias-less linear layer of the transformer a zero bias."""

import torch
from torch import nn

from peftbench.errors import UserError
from peftbench.methods.base import Method, Options, freeze, register


class BitFitOptions(Options):
    add_bias: bool = False


def _add_zero_biases(model: nn.Module) -> None:
    output_embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.bias is None and module is not output_embeddings:
            weight = module.weight
            module.bias = nn.Parameter(torch.zeros(module.out_features, dtype=weight.dtype, device=weight.device))


def _apply(model: nn.Module, family, options: BitFitOptions) -> nn.Module:
    if options.add_bias:
        _add_zero_biases(model)
    freeze(model)
    biases = [parameter for name, parameter in model.named_parameters() if name.endswith("bias")]
    if not biases:
        raise UserError("bitfit: the model has no bias terms; use bitfit[add_bias=true]")
    for parameter in biases:
        parameter.requires_grad_(True)
    return model


register(Method(name="bitfit", summary="BitFit: train bias terms only (add_bias=true adds zero biases)",
                options=BitFitOptions, apply=_apply, default_lr=3e-4, mergeable=True))
