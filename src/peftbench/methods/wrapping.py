"""The one way peftbench's own methods attach to a model: replace a linear layer by a module that keeps
the frozen original as `base_layer` (PEFT's convention, which parameter accounting reads)."""

from collections.abc import Callable

import torch
from torch import nn


class WrappedLinear(nn.Module):
    """A frozen linear layer with something added. `weight` and `bias` stay reachable because model code
    reads them (T5 casts its FFN activations to `wo.weight.dtype`)."""

    def __init__(self, base_layer: nn.Linear):
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias


def replace_module(model: nn.Module, name: str, make: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Put `make(current module)` in place of the module called `name`, and return it."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    replacement = make(getattr(parent, child))
    setattr(parent, child, replacement)
    return replacement
