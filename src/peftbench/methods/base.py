"""What every fine-tuning method declares, and `register`, which puts it in the registry (catalog.METHODS)."""

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from peftbench.architectures import LinearRole, Selection, linear_roles
from peftbench.config import MethodSpec
from peftbench.errors import UserError
from peftbench.methods.catalog import METHODS
from peftbench.methods.options import Options, parse_options
from peftbench.models import Family
from peftbench.taxonomy import check_taxonomy
from peftbench.tuning.space import Axis


class AblationOptions(Options):
    """Options of methods that act on chosen layers and module groups (Pu et al. Table 2):
    `layers=all|early|later|random|0,1,5-7`, `modules=self_attn+ffn`, `drop=cross_attn`."""

    layers: str = "all"
    modules: str = ""
    drop: str = ""

    def selection(self) -> Selection:
        split = lambda text: tuple(part for part in text.replace(",", "+").split("+") if part)  # noqa: E731
        return Selection(layers=self.layers, modules=split(self.modules), drop=split(self.drop))


@dataclass
class Context:
    """What `apply` knows besides the model: the architecture family and the run's seed (for `random`
    layer draws). `record` collects what the method chose (e.g. layers), stored with the run."""

    family: Family
    seed: int = 0
    total_steps: int | None = None  # optimizer steps the run will take, for schedules inside a method
    record: dict = field(default_factory=dict)

    def select(self, model: nn.Module, options: AblationOptions, keep: Callable[[LinearRole], bool],
               required: bool = True) -> list[str]:
        """Names of the linear layers passing `keep` inside the layers and groups the options allow;
        an empty choice is a user error when `required`."""
        chosen, layers = options.selection().apply([r for r in linear_roles(model) if keep(r)], self.seed)
        if options.layers != "all":
            self.record["layers"] = layers
        if not chosen and required:
            raise UserError(f"layers='{options.layers}' modules='{options.modules}' drop='{options.drop}' leaves no"
                            " layer to adapt on this model; widen the selection")
        return [role.name for role in chosen]

    @staticmethod
    def fit_rank(model: nn.Module, names: list[str], rank: int, option: str) -> None:
        """A low-rank update of a layer (B A, B d_out x r, A r x d_in) has rank at most min(d_out, d_in): a rank
        option above the narrowest adapted layer's width only adds parameters, and an absurd one (r=100000) a
        run that never fits. Refused at plan time, where every method is applied on the meta device."""
        modules = dict(model.named_modules())
        width, name = min((min(modules[name].weight.shape), name) for name in names)
        if rank > width:
            raise UserError(f"{option}={rank} is above the width {width} of the layer '{name}' it adapts, where a"
                            f" rank-{rank} update has rank at most {width}; use {option} of at most {width}")


@dataclass(frozen=True)
class Method:
    """A method family. `apply(model, options, context)` returns the model to train with `requires_grad`
    set on exactly the method's parameters; `owns(name)` says which parameter names those are. The
    learning-rate defaults follow Pu et al. A.3: start at `default_lr`, warm up to `peak_factor` x,
    anneal linearly to `final_factor` x. `identity_init`: the adapted model computes the base model's
    function before training. `merge` folds the method into the base weights (mergeable methods only)."""

    name: str
    summary: str
    options: type[Options]
    apply: Callable[[nn.Module, Options, Context], nn.Module]
    owns: Callable[[str], bool]
    default_lr: float
    peak_factor: float = 10.0
    final_factor: float = 1.0
    merge: Callable[[nn.Module], nn.Module] | None = None
    # Entries of base tensors a merge rewrites, given the adapted model and the ids of the base parameters;
    # None: the weights of the layers the method wraps (weights_under_adapters below).
    changed_by_merge: Callable[[nn.Module, set[int]], int] | None = None
    identity_init: bool = False
    # The method computes in float32 whatever the model's dtype (C3A's FFT, DEFT's projection): its identity
    # start and its merged form agree with the base and the unmerged model to float32 rounding only.
    float32_adapter: bool = False
    # Why the adapted model's forward cannot run on the meta device (data-dependent operations: `.item()`,
    # `nonzero`, sparse tensors); its FLOPs, counted there (flops.py), are then not counted. "": it can.
    no_meta_forward: str = ""
    text_to_text_only: bool = False
    # Positions the method adds in front of every input (prompt tuning's and P-tuning's virtual tokens),
    # checked at plan time against models with a fixed number of learned positions.
    virtual_tokens: Callable[[Options], int] | None = None
    # The method trains the whole model (full tuning): its checkpoint is a model's worth of weights, kept only
    # when a suite asks for `save: all`.
    checkpoint_is_model: bool = False
    # The method the others are measured against where a table gives shares of one (full tuning's throughput
    # is 100%, its convergence the speed-up's yardstick); the report reads it from each run's row.
    is_reference: bool = False
    # Called with (adapted model, context, step) after each optimizer step, before gradients are cleared
    # (AdaLoRA's rank allocation reads them); what it records in context.record goes into the run's row.
    on_optimizer_step: Callable[[nn.Module, Context, int], None] | None = None
    # The learning rate of each trained tensor (by name and tensor) as a multiple of the run's, for the options
    # (LoRA+'s faster B); None, or a None answer: one learning rate for all.
    learning_rate_factors: Callable[[Options], Callable[[str, nn.Parameter], float] | None] | None = None
    # Trainable parameters once the method's parameter budget is met, for methods that start larger and
    # prune during training (AdaLoRA: from init_r to target_r singular values per layer on average).
    trainable_at_budget: Callable[[nn.Module, Options], int] | None = None
    # What `peftbench tune` searches besides the learning rate (peftbench.tuning.space): at most one of the
    # method's options whose value matters as much as the learning rate (LoRA's rank, prompt tuning's tokens).
    tuning_axes: tuple[Axis, ...] = ()
    source: str = "peftbench"
    # Lialin et al.'s group (taxonomy.GROUPS: additive, selective, reparametrization, hybrid, or full) and the
    # paper or library file the method follows; register() refuses a method without them.
    taxonomy: str = ""
    reference: str = ""
    trains = True  # shared with the baselines (peftbench.baselines), which are evaluated untrained
    uses_model = True

    @property
    def mergeable(self) -> bool:
        return self.merge is not None

    def parse_options(self, spec: MethodSpec) -> Options:
        return parse_options(self.name, self.options, spec)

    def canonical(self, spec: MethodSpec) -> MethodSpec:
        """The one spelling of the configuration `spec` names: the options that differ from their defaults,
        typed and re-written, sorted by key. `lora`, `lora[r=8]` and `lora[alpha=16,r=8]` are all `lora`;
        `lora[r=16,alpha=32]` is `lora[alpha=32,r=16]`. Run ids hash it, and the tables show it."""
        options, defaults = self.parse_options(spec), self.options()
        changed = {key: _option_text(getattr(options, key)) for key in sorted(self.options.model_fields)
                   if getattr(options, key) != getattr(defaults, key)}
        canonical = MethodSpec(name=self.name, options=changed)
        if self.parse_options(canonical) != options:  # a value that does not survive its own spelling
            raise ValueError(f"method '{spec}': the canonical spelling '{canonical}' reads back differently")
        return canonical


def _option_text(value) -> str:
    """An option value as a spec writes it: `true`, `16` for a whole float, the shortest repr otherwise."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def register(method: Method) -> Method:
    check_taxonomy(method.name, method.taxonomy, method.reference)
    return METHODS.register(method.name, method)


def weights_under_adapters(model: nn.Module, base_ids: set[int]) -> int:
    """Entries a merge rewrites for methods that wrap a layer (PEFT's `base_layer` convention, which
    peftbench's own wrappers follow): the wrapped layer's weight."""
    return sum(module.base_layer.weight.numel() for module in model.modules()
               if isinstance(getattr(module, "base_layer", None), nn.Module)
               and getattr(module.base_layer, "weight", None) is not None)


def freeze(model: nn.Module) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def keep_model(model: nn.Module) -> nn.Module:
    """The merge of methods that change base weights in place (full tuning, BitFit): nothing to fold."""
    return model


def merged_copy(model: nn.Module, merge: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """`merge` applied to a copy, so the trained `model` stays as it is. The copy shares every frozen tensor
    outside wrapped layers (merges write only the wrapped layers' base weights, which it owns), so it costs
    the trained parameters and the wrapped layers' weights, not a second model."""
    wrapped = {id(p) for module in model.modules() if hasattr(module, "base_layer")
               for p in module.base_layer.parameters()}
    shared = {id(p): p for p in model.parameters() if not p.requires_grad and id(p) not in wrapped}
    return merge(copy.deepcopy(model, memo=shared))
