"""Parameter accounting in the senses that matter (Lialin et al., section 12): total parameters of the
base, trainable, added (new tensors, frozen ones and buffers included), changed after merging (entries of the base
weights that differ once the method is folded in), and the size of the adapter checkpoint.
Models are built on the `meta` device: no memory and no weights, so even T5-11B counts in seconds."""

import copy
import functools
from dataclasses import asdict, dataclass

import torch
from torch import nn

from peftbench.artifacts import adapter_state, own_tensor_ids
from peftbench.config import MethodSpec
from peftbench.methods import METHODS
from peftbench.methods.base import Context, weights_under_adapters
from peftbench.models import meta_model


@dataclass(frozen=True)
class Accounting:
    model: str
    method: str
    spec: str
    total: int  # parameters of the base model
    trainable: int
    trainable_at_budget: int | None  # once the method's budget is met (AdaLoRA); None: no budget
    added: int
    changed: int
    adapter_bytes: int
    mergeable: bool
    chosen: dict  # what the method selected (e.g. the layers drawn for layers=random)

    def as_row(self) -> dict:
        row = asdict(self)
        for key in ("trainable", "trainable_at_budget", "added", "changed"):
            value = getattr(self, key)
            row[f"{key}_pct"] = None if value is None else 100 * value / self.total
        return row


def changed_entries(method, model: nn.Module, base_ids: set[int]) -> int:
    trained_in_place = sum(p.numel() for _, p in model.named_parameters() if p.requires_grad and id(p) in base_ids)
    if method.merge is None:
        return trained_in_place
    return trained_in_place + (method.changed_by_merge or weights_under_adapters)(model, base_ids)


@functools.cache
def _meta_template(model_name: str) -> tuple[nn.Module, str]:
    return meta_model(model_name)


def learned_positions(model_name: str) -> int | None:
    """How many positions a model with learned absolute position embeddings (BERT, OPT, GPT-2) can take; None
    for relative or rotary positions (T5, Llama), which have no hard limit. Read from the meta model."""
    template, _ = _meta_template(model_name)
    config = template.config
    for name, module in template.named_modules():
        if isinstance(module, nn.Embedding) and "position" in name:
            return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return None


def adapted_meta_model(model_name: str, spec_text: str, seed: int = 0):
    """The model's architecture on the meta device with the method applied: (adapted model, family, the
    base model's named parameters, the ids of its tensors (artifacts.own_tensor_ids), the method's context).
    Seconds even for T5-11B, and no memory."""
    spec = MethodSpec.parse(spec_text)
    method = METHODS.get(spec.name)
    options = method.parse_options(spec)
    template, family = _meta_template(model_name)
    model = copy.deepcopy(template)  # a meta model copies in no time; building one takes a while
    with torch.device("meta"):
        base = list(model.named_parameters())  # tied tensors (T5's embeddings) appear once
        base_ids = own_tensor_ids(model)
        context = Context(family=family, seed=seed)
        adapted = method.apply(model, options, context)
    return adapted, family, base, base_ids, context


def count(model_name: str, spec_text: str, seed: int = 0) -> Accounting:
    """Count one method on the model's architecture built on the meta device (no classification head).
    Applying the method there also proves it fits the architecture, at no memory cost."""
    spec = MethodSpec.parse(spec_text)
    method = METHODS.get(spec.name)
    adapted, family, base, base_ids, context = adapted_meta_model(model_name, spec_text, seed)
    parameters = list(adapted.named_parameters())
    state = adapter_state(adapted, base_ids)
    return Accounting(
        model=model_name, method=spec.name, spec=str(spec), total=sum(p.numel() for _, p in base),
        trainable=sum(p.numel() for _, p in parameters if p.requires_grad),
        trainable_at_budget=(method.trainable_at_budget(adapted, method.parse_options(spec))
                             if method.trainable_at_budget else None),
        added=sum(t.numel() for t in state.values() if id(t) not in base_ids),
        changed=changed_entries(method, adapted, base_ids),
        adapter_bytes=sum(t.numel() * t.element_size() for t in state.values()),
        mergeable=method.mergeable, chosen=context.record)
