"""Methods generated from HF PEFT's own config classes: a `Tuner` declares one PEFT tuner type as data (its
config class, reference, learning rate, what holds at init and on merge), and `tuner_method` turns it into a
peftbench Method whose options are the config dataclass's simple fields with PEFT's defaults. peftbench keeps
choosing the target layers itself (`targets`, and the layer/module ablations, as for `lora`), so the fields
that pick modules are not options. Nothing is copied by hand: a PEFT release that changes a default or adds a
field changes the method with it (and run ids, which hash the canonical spec, stay put for unchanged specs)."""

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import create_model
from torch import nn

from peftbench.errors import UserError
from peftbench.methods.base import AblationOptions, Method
from peftbench.methods.peft_methods import TASK_TYPES, _wrap, peft_merge, target_filter

# Config fields peftbench sets itself: which modules are adapted (targets, layers=, modules=, drop=), the task,
# module layouts it never has (Conv1D's fan_in_fan_out), and training base biases (BitFit's job; a tuner trains
# only its own tensors, so that gradients reach exactly the method's parameters).
OWNED_FIELDS = {"target_modules", "exclude_modules", "modules_to_save", "layers_to_transform", "layers_pattern",
                "fan_in_fan_out", "bias", "task_type", "use_effective_conv2d"}  # the last: convolutions only
SIMPLE_TYPES = (bool, int, float, str, type(None))
# peftbench's learning rates are Pu et al.'s (A.3): lora starts its warm-up at 3e-4 where PEFT's MetaMathQA
# benchmark trains LoRA at 1e-4 (method_comparison/MetaMathQA/default_training_params.json). A tuner keeps its
# lr's ratio to LoRA's in that benchmark: default_lr = peft_lr x 3e-4 / 1e-4.
LORA_LR, PEFT_LORA_LR = 3e-4, 1e-4


class PeftTunerOptions(AblationOptions):
    """What every generated method takes besides its PEFT fields: lora's targets (qv, all-linear,
    q+k+v+o+in+out) and the layer/module ablations."""

    targets: str = "qv"


@dataclass(frozen=True)
class Tuner:
    """One PEFT tuner type as a peftbench method. `not_identity` / `not_mergeable`: why the property fails
    (empty: it holds, checked by tests/test_method_zoo.py on tiny T5, Llama, BERT)."""

    name: str
    config: str  # the PEFT config class, e.g. "VeraConfig"
    summary: str
    reference: str  # the paper; the PEFT file is peft/tuners/<package>/
    taxonomy: str  # Lialin et al.'s group (peftbench.taxonomy.GROUPS)
    peft_lr: float  # the lr of PEFT's MetaMathQA experiment `lr_from` (its default 1e-4 where that sets none)
    lr_from: str  # experiments/<lr_from>/ in PEFT's method_comparison/MetaMathQA; "": PEFT ran none
    # A tenth of the scaled lr where the scaled one failed a real run (MiniLM, bbc_topic, 100 examples: at chance,
    # or best at the first epoch) and a tenth did not; docs/methods.md gives both scores.
    scaled_lr_too_high: bool = False
    not_identity: str = ""
    not_mergeable: str = ""
    float32_adapter: str = ""  # why the tuner computes in float32 whatever the model's dtype (Method.float32_adapter)
    # Entries of the base weights a merge rewrites; None: the whole weight of every wrapped layer.
    changed_by_merge: Callable[[nn.Module, set[int]], int] | None = None
    no_meta_forward: str = ""  # Method.no_meta_forward: why its forward cannot run on the meta device
    changed_is_bound: str = ""  # why changed_by_merge is only an upper bound of the entries a merge rewrites
    # Adapter tensors built on the CPU when counting on the meta device: PEFT's init runs an operation there
    # that has no meta kernel (BOFT's permutation matrices, UniLoRA's bincount, SHiRA's mask).
    init_off_meta: bool = False
    # Adjusts the PEFT config for the model before PEFT applies it (SHiRA's mask function on the meta device).
    configure: Callable[[object, nn.Module], None] | None = None

    def default_lr(self) -> float:
        scaled = self.peft_lr * LORA_LR / PEFT_LORA_LR
        return float(f"{scaled / 10 if self.scaled_lr_too_high else scaled:.6g}")

    def config_class(self) -> type:
        import peft

        return getattr(peft, self.config)

    def installed(self) -> bool:
        """An older PEFT (pyproject allows >= 0.17) may not have the tuner yet: it is then no method."""
        import peft

        return hasattr(peft, self.config)

    def package(self) -> str:
        return self.config_class().__module__.split(".")[-2]

    def prefix(self) -> str:
        from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING

        return PEFT_TYPE_TO_PREFIX_MAPPING[self.config_class()().peft_type]


def _simple(annotation) -> object | None:
    """The annotation if a spec string can spell every value it allows (bool, int, float, str, a Literal, None,
    or a union of these), else None: dicts, lists and callables are not options."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return annotation
    if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
        return annotation if all(_simple(arg) is not None for arg in typing.get_args(annotation)) else None
    return annotation if annotation in SIMPLE_TYPES else None


def _default(config_field: dataclasses.Field):
    if config_field.default is not dataclasses.MISSING:
        return config_field.default
    return config_field.default_factory()  # type: ignore[misc]


def generated_options(tuner: Tuner) -> type[PeftTunerOptions]:
    """A pydantic model of the config class's own simple fields and defaults, on top of PeftTunerOptions:
    unknown keys are refused and spec strings coerced as for every method."""
    from peft import PeftConfig

    config_class = tuner.config_class()
    hints = typing.get_type_hints(config_class)
    inherited = {f.name for f in dataclasses.fields(PeftConfig)}
    fields = {}
    for config_field in dataclasses.fields(config_class):
        if config_field.name in inherited | OWNED_FIELDS:
            continue
        annotation = _simple(hints[config_field.name])
        if annotation is not None:
            fields[config_field.name] = (annotation, _default(config_field))
    clash = set(fields) & set(PeftTunerOptions.model_fields)
    if clash:  # a PEFT field that shadows targets/layers/modules/drop would change their meaning
        raise ValueError(f"{tuner.config} field {sorted(clash)[0]} clashes with a peftbench option")
    return create_model(f"{tuner.config.removesuffix('Config')}Options", __base__=PeftTunerOptions, **fields)


def _peft_values(options: PeftTunerOptions) -> dict:
    own = set(type(options).model_fields) - set(PeftTunerOptions.model_fields)
    return {key: getattr(options, key) for key in type(options).model_fields if key in own}


def on_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def _spec_text(name: str, options: PeftTunerOptions) -> str:
    defaults = type(options)()
    changed = [f"{key}={getattr(options, key)}" for key in type(options).model_fields
               if getattr(options, key) != getattr(defaults, key)]
    return f"{name}[{','.join(changed)}]" if changed else name


def tuner_apply(tuner: Tuner):
    def apply(model: nn.Module, options: PeftTunerOptions, context):
        names = context.select(model, options, target_filter(options.targets))
        try:
            config = tuner.config_class()(task_type=TASK_TYPES[context.family], target_modules=names,
                                          **_peft_values(options))
            if tuner.configure:
                tuner.configure(config, model)
            if tuner.init_off_meta and on_meta(model):
                with torch.device("cpu"):
                    adapted = _wrap(model, config)
                return adapted.to("meta")  # what PEFT built on the CPU (BOFT's permutations) joins the meta model
            return _wrap(model, config)
        except (ValueError, TypeError) as error:  # PEFT's checks of its options, alone and against layer shapes
            message = " ".join(str(error).split()).rstrip(".")
            raise UserError(f"method '{_spec_text(tuner.name, options)}' does not fit this model's {len(names)}"
                            f" target layers: PEFT says: {message}. Change the option it names (`peftbench"
                            " methods` lists them) or the targets") from None
    return apply


def tuner_method(tuner: Tuner) -> Method:
    prefix = tuner.prefix()
    return Method(name=tuner.name, summary=tuner.summary, options=generated_options(tuner),
                  apply=tuner_apply(tuner), owns=lambda name: prefix in name,
                  default_lr=tuner.default_lr(),
                  merge=None if tuner.not_mergeable else peft_merge, changed_by_merge=tuner.changed_by_merge,
                  identity_init=not tuner.not_identity, float32_adapter=bool(tuner.float32_adapter),
                  no_meta_forward=tuner.no_meta_forward,
                  source="HF PEFT", taxonomy=tuner.taxonomy,
                  reference=f"{tuner.reference}; HF PEFT {tuner.config} (tuners/{tuner.package()})")


def trained_entries(model: nn.Module, base_ids: set[int]) -> int:
    """A sparse update's merge rewrites one weight entry per trained value (SHiRA, Super-Tuning)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in base_ids)

