"""Hybrid methods (Lialin et al. section 10): MAM adapters and UniPELT, built from peftbench's prefix
(methods/prefix.py) and the adapter building blocks of methods/adapters.py.

* MAM (He et al. 2022): prefix tuning plus the scaled parallel adapter beside every FFN, as AdapterHub's
  `MAMConfig` (`configuration/adapter_config.py`): PrefixTuningConfig(bottleneck_size=800) - 30 tokens,
  separate prefixes at every attention site - and ParBnConfig().
* UniPELT (Mao et al. 2022): gated LoRA on the query and value projections, a gated prefix at every
  attention site and a gated bottleneck adapter after the FFN, as AdapterHub's `UniPELTConfig`
  (PrefixTuningConfig(prefix_length=10), SeqBnConfig(reduction_factor=16), LoRAConfig(r=8), each with
  use_gating) and Mao et al.'s code (`lora_layers.py` LoRA_Linear.lora_gate; BertSelfAttention.prefix_gate;
  adapters/modeling.py Adapter.gate). Each gate is sigmoid(Linear(x) -> 1) of its module's input: the
  projection's input for LoRA, the attention's input for the prefix, the adapter's input for the adapter.
  Mao et al. and AdapterHub average each gate over the sequence; peftbench evaluates every gate per token,
  because an average lets a decoder's earlier positions see later tokens, makes an output depend on the
  batch's padding, and under the KV cache of `generate` would average over the one new token only.
  The LoRA gate *replaces* LoRA's alpha/r, as in both references (Mao et al.'s LoRA_Linear.forward sets
  `self.scaling = torch.sigmoid(self.lora_gate(x))`; AdapterHub's LoRA.forward multiplies by the gate and
  skips `self.scaling` under use_gating), so alpha plays no part there: AdapterHub's UniPELTConfig alpha 2,
  the lialin2024 suite's configuration, changes nothing. `alpha=<value>` instead multiplies the gate by
  alpha/r, the form peftbench ran before issue 28: it is kept so that runs stored with an alpha rebuild as
  they trained; no reference runs it."""

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from peftbench.methods.adapters import LR, _add_parallel, _add_serial, _is_ffn_output, _linear
from peftbench.methods.base import AblationOptions, Method, freeze, register
from peftbench.methods.prefix import PrefixTuningOptions, add_prefix, init_gate, owns_prefix
from peftbench.methods.wrapping import WrappedLinear, replace_module


class GatedLoRA(WrappedLinear):
    """UniPELT's LoRA: base(x) + sigmoid(w.x + b) * B A x, B starting at zero and the gate as Mao et al.'s
    `lora_gate` (lora_layers.py), which takes the place of LoRA's alpha/r; `alpha` given, the gate is
    multiplied by alpha/r (no reference does this; see the module's docstring)."""

    def __init__(self, base_layer: nn.Linear, r: int, alpha: float | None):
        super().__init__(base_layer)
        self.adapter_lora_a = _linear(base_layer, base_layer.in_features, r, bias=False)
        self.adapter_lora_b = _linear(base_layer, r, base_layer.out_features, zero=True, bias=False)
        self.adapter_gate = _linear(base_layer, base_layer.in_features, 1)
        init_gate(self.adapter_gate)
        self.scaling = 1.0 if alpha is None else alpha / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        change = self.scaling * self.adapter_lora_b(self.adapter_lora_a(x))
        return self.base_layer(x) + torch.sigmoid(self.adapter_gate(x)) * change


class MamOptions(PrefixTuningOptions):
    tokens: int = Field(30, ge=1)  # He et al.: prefix length 30, MLP width 800 (AdapterHub's MAMConfig)
    hidden: int = Field(800, ge=0)
    reduction: int = Field(2, ge=1)  # parallel adapter width d/2 (512 on d=1024), scale 4
    scale: float = Field(4.0, gt=0)
    nonlinearity: Literal["relu", "gelu"] = "relu"


def _mam(model: nn.Module, options: MamOptions, context) -> nn.Module:
    ffn = context.select(model, AblationOptions(), _is_ffn_output)
    freeze(model)
    add_prefix(model, context.family, options.tokens, options.hidden, options.sites)
    _add_parallel(model, ffn, options.reduction, options.scale, options.nonlinearity)
    return model


class UniPeltOptions(PrefixTuningOptions):
    tokens: int = Field(10, ge=1)  # Mao et al.: prefix length 10, MLP width 512
    hidden: int = Field(512, ge=0)
    r: int = Field(8, ge=1)
    alpha: float | None = Field(None, gt=0)  # unset: the gate replaces alpha/r, as Mao et al. and AdapterHub
    reduction: int = Field(16, ge=1)
    nonlinearity: Literal["relu", "gelu"] = "relu"


def _unipelt(model: nn.Module, options: UniPeltOptions, context) -> nn.Module:
    everything = AblationOptions()
    lora = context.select(model, everything, lambda role: role.kind != "ffn" and role.projection in ("q", "v"))
    ffn = context.select(model, everything, _is_ffn_output)
    freeze(model)
    # The prefix first: its sites are found from the query projections, which LoRA then wraps.
    add_prefix(model, context.family, options.tokens, options.hidden, options.sites, gated=True)
    for name in lora:
        replace_module(model, name, lambda base: GatedLoRA(base, options.r, options.alpha))
    _add_serial(model, ffn, options.reduction, options.nonlinearity, gated=True)
    return model


def _owns_adapter_or_prefix(name: str) -> bool:
    return "adapter_" in name or owns_prefix(name)


# He et al.'s MAM runs train at 5e-5 (unify-parameter-efficient-tuning, exps/run_mbart_trainer.sh: lr=5e-5), an
# order below the adapters' 3e-4: at 3e-4 (peak 3e-3) MAM on MiniLM stayed at the majority answer.
MAM_LR = 5e-5

register(Method(name="mam", summary="MAM adapter (He et al. 2022): prefix tuning + scaled parallel FFN adapter",
                options=MamOptions, apply=_mam, owns=_owns_adapter_or_prefix, default_lr=MAM_LR,
                taxonomy="hybrid", reference="He et al. 2022; AdapterHub MAMConfig"))
register(Method(name="unipelt", summary="UniPELT (Mao et al. 2022): gated LoRA, prefix tuning and FFN adapter",
                options=UniPeltOptions, apply=_unipelt, owns=_owns_adapter_or_prefix, default_lr=LR,
                taxonomy="hybrid", reference="Mao et al. 2022; AdapterHub UniPELTConfig"))
