"""Compacter and Compacter++ (Karimi Mahabadi et al. 2021): bottleneck adapters whose projections are
low-rank parameterised hypercomplex multiplication (PHM) layers sharing one n x n x n rule across the model.
As AdapterHub's CompacterConfig (a DoubleSeqBnConfig: after self-attention and FFN outputs) and
CompacterPlusPlusConfig (a SeqBnConfig: on the residual stream after each FFN), which Lialin et al. ran;
the adapter wrappers and their placement are adapters.py's."""

import torch
from pydantic import Field
from torch import nn

from peftbench.errors import UserError
from peftbench.methods.adapters import (
    LR,
    Bottleneck,
    Nonlinearity,
    Placement,
    _is_ffn_output,
    _is_houlsby_site,
    _owns_adapter,
    _place_serial,
    _size,
)
from peftbench.methods.base import AblationOptions, Method, freeze, register


class PHMLinear(nn.Module):
    """Compacter's low-rank parameterised hypercomplex multiplication layer: the weight is
    sum_i A_i kron (s_i t_i), with the n x n "slow" matrices A shared by every Compacter layer of the
    model and the rank-one "fast" factors s_i (in/n x 1), t_i (1 x out/n) this layer's own. Initialised as
    Karimi Mahabadi et al.'s configs and AdapterHub's PHMLayer declare: s, t Glorot-uniform, bias zero (the
    shared rule: see `_compacter`). AdapterHub's `init_W` tests the option's truthiness and so always takes
    its Glorot-normal branch; the declared Glorot-uniform is followed here."""

    def __init__(self, base: nn.Linear, in_features: int, out_features: int, shared: nn.Parameter):
        super().__init__()
        n = shared.shape[0]
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.shared = shared
        self.left = nn.Parameter(torch.empty(n, in_features // n, 1, **factory))
        self.right = nn.Parameter(torch.empty(n, 1, out_features // n, **factory))
        self.bias = nn.Parameter(torch.zeros(out_features, **factory))
        for i in range(n):
            nn.init.xavier_uniform_(self.left[i])
            nn.init.xavier_uniform_(self.right[i])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, p, _ = self.left.shape
        fast = self.left @ self.right  # n x in/n x out/n
        # sum_i kron(A_i, fast_i), whose entry (a*p + c, b*q + d) is sum_i A_i[a, b] fast_i[c, d] (q = out/n)
        weight = torch.einsum("iab,icd->acbd", self.shared, fast).reshape(n * p, -1)
        return x @ weight + self.bias


class CompacterOptions(AblationOptions):
    reduction: int = Field(32, ge=1)  # Karimi Mahabadi et al.: width 32 on d=1024
    n: int = Field(4, ge=1)  # Kronecker products per layer (size of the shared matrices)
    nonlinearity: Nonlinearity = "gelu"


class CompacterPlusPlusOptions(CompacterOptions):
    # CompacterPlusPlusConfig (a SeqBnConfig). Karimi Mahabadi et al.'s own T5 code adds the adapter to the
    # FFN's output before the residual: compacter_pp[placement=before_residual].
    placement: Placement = "after_residual"


def _compacter(keep):
    def apply(model: nn.Module, options: CompacterOptions, context) -> nn.Module:
        names = context.select(model, options, keep)
        freeze(model)
        first = model.get_submodule(names[0])
        d, n = first.out_features, options.n
        if d % n:
            raise UserError(f"compacter: n={n} must divide the hidden size {d}; pick n among its divisors")
        # One rule for the whole model, N(0, 1e-4): compacter's and AdapterHub's shared_phm_rule, phm_c_init
        # "normal", phm_init_range 1e-4.
        shared = nn.Parameter(torch.empty(n, n, n, device=first.weight.device, dtype=first.weight.dtype))
        nn.init.normal_(shared, std=1e-4)
        size = _size(d, options.reduction, multiple=n)

        def bottleneck(base: nn.Linear) -> Bottleneck:
            return Bottleneck(PHMLinear(base, d, size, shared), PHMLinear(base, size, d, shared), options.nonlinearity)

        # Compacter reads as Houlsby's adapters (DoubleSeqBn); Compacter++ has the placement option.
        _place_serial(model, names, bottleneck, getattr(options, "placement", "before_residual"))
        return model
    return apply


register(Method(name="compacter", summary="Compacter: Houlsby-placed adapters of low-rank Kronecker (PHM) layers",
                options=CompacterOptions, apply=_compacter(_is_houlsby_site), owns=_owns_adapter, default_lr=LR,
                taxonomy="hybrid", reference="Karimi Mahabadi et al. 2021; AdapterHub CompacterConfig"))
register(Method(name="compacter_pp", summary="Compacter++: PHM adapters on the residual stream after each FFN",
                options=CompacterPlusPlusOptions, apply=_compacter(_is_ffn_output), owns=_owns_adapter,
                default_lr=LR, taxonomy="hybrid",
                reference="Karimi Mahabadi et al. 2021; AdapterHub CompacterPlusPlusConfig"))
