"""LoRA's relatives. Through HF PEFT: DoRA (Liu et al. 2024) and AdaLoRA (Zhang et al. 2023). Written here,
as PEFT has neither: T-Few's "LoRA with scaling" (Liu et al. 2022), the LoRA that Pu et al. actually ran,
and KronA (Edalati et al. 2022). All pick their layers through architectures.py like `lora`, so targets
and the layer/module ablations mean the same on every architecture."""

import functools
import math
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from peftbench.errors import UserError
from peftbench.methods.base import AblationOptions, Method, freeze, register
from peftbench.methods.adapted import AdaptedLinear, ScaledLoraLinear, merge_adapted, wrap_layers
from peftbench.methods.peft_methods import (LORA_RANKS, TASK_TYPES, LoraOptions, _wrap, lora_apply, loraplus_factors, peft_merge,
                                            target_filter)
from peftbench.methods.tfew_ia3 import is_tfew_ia3_target


def _targets(targets: str):
    """lora's `targets` (qv, all-linear, q+k+v+o+in+out), plus `ia3`: T-Few's (IA)3 layout (keys, values and
    the FFN's un-gated in-branch)."""
    return is_tfew_ia3_target if targets == "ia3" else target_filter(targets)


# --- DoRA and AdaLoRA (HF PEFT) ---------------------------------------------------------------------------


# DoRA is LoRA with a learned magnitude per output (PEFT's use_dora), targeted the same way.
_dora = functools.partial(lora_apply, use_dora=True)


class AdaLoraOptions(AblationOptions):
    init_r: int = Field(12, ge=1)  # the rank every targeted layer starts with
    target_r: int = Field(8, ge=1)  # the average rank the budget prunes to
    total_step: int | None = Field(None, ge=1)  # length of the budget schedule; default: the run's optimizer steps
    orth_reg_weight: float = Field(0.5, ge=0)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: str = "qv"


def _adalora(model, options: AdaLoraOptions, context):
    # AdaLoRA trains an SVD-form update P diag(E) Q and prunes singular values by importance through
    # `update_and_allocate(step)`, run by the training loop after each optimizer step (the method's
    # on_optimizer_step hook). PEFT adds its orthogonality regulariser to the model's own loss, so encoders,
    # whose loss comes from peftbench's head, train without it.
    from peft import AdaLoraConfig

    names = context.select(model, options, _targets(options.targets))
    context.fit_rank(model, names, options.init_r, "init_r")
    total_step = options.total_step or context.total_steps or 1000
    model = _wrap(model, AdaLoraConfig(task_type=TASK_TYPES[context.family], lora_alpha=options.alpha,
                                       lora_dropout=options.dropout, target_modules=names, init_r=options.init_r,
                                       target_r=options.target_r, total_step=total_step,
                                       orth_reg_weight=options.orth_reg_weight))
    context.record.update(trainable_at_init_rank=_adalora_trainable(model, options.init_r),
                          trainable_at_target_budget=_adalora_trainable(model, options.target_r))
    return model


def _singular_triplets(model: nn.Module) -> list[tuple[torch.Tensor, int]]:
    """(E, cost) per AdaLoRA layer: each singular value kept costs a row of P (in), a column of Q (out) and
    its own entry of E."""
    return [(module.lora_E["default"], module.in_features + module.out_features + 1) for module in model.modules()
            if isinstance(getattr(module, "lora_E", None), nn.ParameterDict) and "default" in module.lora_E]


def _adalora_trainable(model: nn.Module, rank: int) -> int:
    """Trainable parameters with `rank` singular values in every layer. PEFT's budget is rank x layers values,
    which it allocates by importance, so at target_r this is exact where all layers have one shape (q and v
    of T5) and otherwise the count of an even allocation."""
    return sum(rank * cost for _, cost in _singular_triplets(model))


def _adalora_allocate(model: nn.Module, context, step: int) -> None:
    model.base_model.update_and_allocate(step)
    # Pruned singular values are masked to zero: the parameters the current allocation uses, measured.
    context.record["trainable_allocated"] = sum(int(torch.count_nonzero(values)) * cost
                                                for values, cost in _singular_triplets(model))


# --- LoRA with scaling (T-Few) ----------------------------------------------------------------------------

SCALING_PARTS = {"ab", "scaling", "scaling_in", "scaling_out"}
LORA_SCALING_PARAMETERS = ("lora_a", "lora_b", "multi_lora_a", "multi_lora_b")


class LoraScalingOptions(AblationOptions):
    # Defaults are Pu et al.'s: rank 2 and scaling rank 1 on every attention projection. That reproduces their
    # LoRA count on FLAN-T5-XL: 288 projections (24 encoder layers x 4, 24 decoder layers x 8) of 2048x2048,
    # each 2*(2048+2048) additive + (2048+2048) scaling = 12,288, so 288 * 12,288 = 3,538,944 (their A.3).
    r: int = Field(2, ge=1)
    s: int = Field(1, ge=1)
    train: str = "ab+scaling"
    targets: str = "qkvo"
    init_scale: float = Field(0.01, ge=0)  # T-Few's lora_init_scale: std of lora_a

    @field_validator("train")
    @classmethod
    def _check_train(cls, value: str) -> str:
        parts = set(value.split("+"))
        if not value or parts - SCALING_PARTS:
            raise ValueError(f"train='{value}': use parts joined by '+' from ab (the additive low-rank pair), "
                             "scaling (both scaling factors), scaling_in, scaling_out")
        return value

    def parts(self) -> set[str]:
        parts = set(self.train.split("+"))
        if "scaling" in parts:
            parts |= {"scaling_in", "scaling_out"}
        return parts


def _lora_scaling(model, options: LoraScalingOptions, context):
    parts = options.parts()
    if options.s > 1 and not {"scaling_in", "scaling_out"} <= parts:
        raise UserError(f"lora_scaling: s={options.s} needs both scaling factors trained (train=...+scaling);"
                        " with one side fixed at 1 a higher scaling rank adds nothing. Use s=1")
    names = context.select(model, options, _targets(options.targets))
    freeze(model)
    wrap_layers(model, names, lambda name, linear: ScaledLoraLinear(linear, options.r, options.s, parts,
                                                                     options.init_scale))
    return model


# --- KronA (Edalati et al. 2022), and HF PEFT's LoKr as a configuration of it -----------------------------


class KronaOptions(AblationOptions):
    # Delta W = scale * (A kron B) with A of a_out x a_in and B of (out/a_out) x (in/a_in). 0 (default): the
    # divisor of each dimension nearest its square root, which balances A and B and minimises the parameters
    # for a full-rank update (a 1024x1024 weight gets A and B of 32x32: 2,048 parameters). It is also LoKr's
    # `factorization(dim)`: the largest divisor not above the square root (the nearest one always is).
    a_out: int = Field(0, ge=0)
    a_in: int = Field(0, ge=0)
    # > 0: B = B_out B_in of rank b_rank, as LoKr factors its w2 (its `r`). Like LoKr, B stays whole when
    # b_rank >= max(B's dims) / 2, where the product would not be smaller.
    b_rank: int = Field(0, ge=0)
    # krona: A like nn.Linear's weight and B (B_out when factored) zero, as LoRA's A and B; lokr: A zero and B
    # (or B_out and B_in) Kaiming-uniform, LoKr's init_weights=True (tuners/lokr/layer.py).
    init: Literal["krona", "lokr"] = "krona"
    scale: float = Field(1.0, gt=0)  # LoKr's alpha / r (8 / 8 by default)
    targets: str = "qv"


def _balanced_divisor(n: int) -> int:
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - math.sqrt(n)), d))


def _kaiming(*shape: int, **like) -> nn.Parameter:
    tensor = torch.empty(*shape, **like)
    nn.init.kaiming_uniform_(tensor, a=math.sqrt(5))
    return nn.Parameter(tensor)


class KronaLinear(AdaptedLinear):
    """KronA: W' = W + scale * (krona_a kron B), B = krona_b, or krona_b_out @ krona_b_in when factored. The
    update is zero at the start (one factor starts at zero, see KronaOptions.init). The forward never builds
    the Kronecker product: with the input reshaped to X (a_in x b_in), (A kron B) x = vec(A X B^T)."""

    def __init__(self, base_layer: nn.Linear, a_out: int, a_in: int, scale: float, b_rank: int = 0,
                 init: str = "krona"):
        super().__init__(base_layer)
        like = self._like()
        self.scale = scale
        b_shape = (self.out_features // a_out, self.in_features // a_in)
        # The factor that starts at zero: B's output side under KronA's init, A under LoKr's.
        zero = lambda *shape: nn.Parameter(torch.zeros(*shape, **like))  # noqa: E731
        krona = init == "krona"
        self.krona_a = _kaiming(a_out, a_in, **like) if krona else zero(a_out, a_in)
        self.krona_b = self.krona_b_out = self.krona_b_in = None
        if 0 < b_rank < max(b_shape) / 2:
            self.krona_b_out = zero(b_shape[0], b_rank) if krona else _kaiming(b_shape[0], b_rank, **like)
            self.krona_b_in = _kaiming(b_rank, b_shape[1], **like)
        else:
            self.krona_b = zero(*b_shape) if krona else _kaiming(*b_shape, **like)

    def _b(self) -> torch.Tensor:
        return self.krona_b if self.krona_b is not None else self.krona_b_out @ self.krona_b_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_in = self.krona_a.shape[1]
        grid = x.reshape(*x.shape[:-1], a_in, self.in_features // a_in)
        left = torch.matmul(self.krona_a, grid)
        if self.krona_b is not None:
            delta = torch.matmul(left, self.krona_b.t())
        else:  # X B^T = (X B_in^T) B_out^T: never the full B
            delta = torch.matmul(torch.matmul(left, self.krona_b_in.t()), self.krona_b_out.t())
        return self.base_layer(x) + self.scale * delta.reshape(*x.shape[:-1], self.out_features)

    def merged_weight(self) -> torch.Tensor:
        return self.weight + self.scale * torch.kron(self.krona_a, self._b())


def _krona(model, options: KronaOptions, context):
    names = context.select(model, options, _targets(options.targets))
    modules = dict(model.named_modules())
    shapes = {}
    for name in names:
        out_features, in_features = modules[name].out_features, modules[name].in_features
        a_out = options.a_out or _balanced_divisor(out_features)
        a_in = options.a_in or _balanced_divisor(in_features)
        if out_features % a_out or in_features % a_in:
            raise UserError(f"krona: a_out={a_out}, a_in={a_in} must divide the shape of '{name}' ({out_features}"
                            f" out x {in_features} in); pick divisors or leave them unset for balanced factors")
        shapes[name] = (a_out, a_in)
    freeze(model)
    wrap_layers(model, names, lambda name, linear: KronaLinear(linear, *shapes[name], options.scale, options.b_rank,
                                                                options.init))
    return model


def _owns(*parameter_names: str):
    return lambda name: name.rpartition(".")[2] in parameter_names


register(Method(name="dora", summary="DoRA (Liu et al. 2024): LoRA with a learned per-output magnitude",
                options=LoraOptions, apply=_dora, owns=lambda name: "lora_" in name, default_lr=3e-4,
                merge=peft_merge, identity_init=True, learning_rate_factors=loraplus_factors, source="HF PEFT",
                taxonomy="reparametrization", tuning_axes=(LORA_RANKS,),
                reference="Liu et al. 2024; HF PEFT LoraConfig(use_dora=True) (tuners/lora)"))
register(Method(name="adalora", summary="AdaLoRA (Zhang et al. 2023): SVD-form LoRA whose rank budget is"
                " reallocated by importance during training",
                options=AdaLoraOptions, apply=_adalora, owns=lambda name: "lora_" in name, default_lr=3e-4,
                merge=peft_merge, identity_init=True, on_optimizer_step=_adalora_allocate,
                trainable_at_budget=lambda model, options: _adalora_trainable(model, options.target_r),
                source="HF PEFT", taxonomy="reparametrization",
                reference="Zhang et al. 2023; HF PEFT AdaLoraConfig (tuners/adalora)"))
register(Method(name="lora_scaling", summary="LoRA with scaling (T-Few, Liu et al. 2022; Pu et al.'s LoRA):"
                " rank-r update plus rank-s element-wise weight scaling",
                options=LoraScalingOptions, apply=_lora_scaling, owns=_owns(*LORA_SCALING_PARAMETERS),
                default_lr=3e-4, merge=merge_adapted, identity_init=True, source="peftbench (after T-Few)",
                taxonomy="reparametrization", reference="Liu et al. 2022; T-Few lora.py (LoRALinear)"))
register(Method(name="krona", summary="KronA (Edalati et al. 2022): Kronecker-product update A kron B; with"
                " b_rank and init=lokr, HF PEFT's LoKr", options=KronaOptions, apply=_krona,
                owns=_owns("krona_a", "krona_b", "krona_b_out", "krona_b_in"), default_lr=3e-4,
                merge=merge_adapted, identity_init=True, source="peftbench", taxonomy="reparametrization",
                reference="Edalati et al. 2022"))
