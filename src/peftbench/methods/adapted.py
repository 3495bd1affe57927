"""peftbench's own wrapped linear layers whose update folds into the weight (AdaptedLinear), and T-Few's
LoRA-with-scaling layer (Liu et al. 2022, T-Few's `lora.py`), which `lora_scaling` and T-Few's (IA)3 both
build on. Kept apart from the method modules so that each of them imports it, and none another."""

import torch
from torch import nn
from torch.nn import functional as F

from peftbench.methods.wrapping import WrappedLinear, replace_module


class AdaptedLinear(WrappedLinear):
    """A wrapped linear layer whose update folds into its weight (and bias). Subclasses give `forward` and
    `merged_weight`, and `merged_bias` where the update scales the bias."""

    def _like(self) -> dict:
        return {"dtype": self.weight.dtype, "device": self.weight.device}

    def merged_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def merged_bias(self) -> torch.Tensor | None:
        return self.bias


def wrap_layers(model: nn.Module, names: list[str], make) -> None:
    """Replace each named linear layer by `make(name, layer)`."""
    for name in names:
        replace_module(model, name, lambda layer, name=name: make(name, layer))


def merge_adapted(model: nn.Module) -> nn.Module:
    """Fold every AdaptedLinear into its base layer's weight and put the plain nn.Linear back in its place."""
    for name, module in list(model.named_modules()):
        if isinstance(module, AdaptedLinear):
            with torch.no_grad():
                module.base_layer.weight.copy_(module.merged_weight())
                if module.bias is not None:
                    module.base_layer.bias.copy_(module.merged_bias())
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.base_layer)
    return model


class ScaledLoraLinear(AdaptedLinear):
    """T-Few's LoRA with scaling: W' = W * (multi_lora_b @ multi_lora_a) / s + lora_b @ lora_a / r, the first
    product element-wise, so a rank-1 scaling (s=1) rescales W's output rows and input columns ((IA)3-like)
    and the second adds a rank-r update. Parts not trained are left out (they would stay at their identity
    values). Identity at init: lora_b = 0 and the scaling factors multiply to exactly 1. T-Few adds noise to
    multi_lora_a, so its start is only close to the base model; here the noise is centred over the s rank
    components, which keeps the product exactly 1 and still breaks their symmetry (for s=1 it vanishes).
    The bias, as T-Few's LoRALinear.forward: with no additive pair and s=1 (its "parsimonious implementation
    for ia3 and lora scaling") the output scaling multiplies the layer's whole output, bias included,
    (W x + b) * l, as HF PEFT's IA3 Linear does too; otherwise the scaled weight's output gets the bias unscaled."""

    def __init__(self, base_layer: nn.Linear, r: int, s: int, parts: set[str], init_scale: float):
        super().__init__(base_layer)
        like = self._like()
        self.r, self.s = r, s
        self.lora_a = self.lora_b = self.multi_lora_a = self.multi_lora_b = None
        if "ab" in parts:
            self.lora_a = nn.Parameter(torch.randn(r, self.in_features, **like) * init_scale)
            self.lora_b = nn.Parameter(torch.zeros(self.out_features, r, **like))
        if "scaling_in" in parts:
            noise = torch.randn(s, self.in_features, **like) * init_scale
            self.multi_lora_a = nn.Parameter(1 + (noise - noise.mean(0, keepdim=True)))
        if "scaling_out" in parts:
            self.multi_lora_b = nn.Parameter(torch.ones(self.out_features, s, **like))

    @property
    def scales_bias(self) -> bool:
        """T-Few's parsimonious path (rank 0, scaling rank 1): the output scaling multiplies the bias too."""
        return self.lora_a is None and self.s == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In the activations' dtype (bf16 under autocast), so the scaling keeps the base layer's output dtype.
        a, b = (None if f is None else f.to(x.dtype) for f in (self.multi_lora_a, self.multi_lora_b))
        if a is not None and b is not None and self.s > 1:
            # sum_k b_k * ((x * a_k) W^T) / s, without materialising the scaled weight
            y = (F.linear(x.unsqueeze(-2) * a, self.weight) * b.t()).sum(-2) / self.s
        elif self.scales_bias:
            y = F.linear(x if a is None else x * a[0], self.weight, self.bias)
            return y if b is None else y * b[:, 0].to(y.dtype)
        else:  # rank-1 scaling: scale the input columns, then the output rows
            y = F.linear(x if a is None else x * a[0], self.weight)
            if b is not None:
                y = y * b[:, 0].to(y.dtype)
        if self.lora_a is not None:
            y = y + F.linear(F.linear(x, self.lora_a), self.lora_b) / self.r
        return y if self.bias is None else y + self.bias

    def merged_weight(self) -> torch.Tensor:
        weight = self.weight
        a, b = self.multi_lora_a, self.multi_lora_b
        if a is not None and b is not None:
            weight = weight * (b @ a) / self.s
        elif a is not None:
            weight = weight * a
        elif b is not None:
            weight = weight * b
        if self.lora_a is not None:
            weight = weight + self.lora_b @ self.lora_a / self.r
        return weight

    def merged_bias(self) -> torch.Tensor | None:
        scaled = self.bias is not None and self.scales_bias and self.multi_lora_b is not None
        return self.bias * self.multi_lora_b[:, 0] if scaled else self.bias
