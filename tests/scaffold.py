"""What the method tests share: a method applied to a tiny architecture, its outputs on a fixed batch with
padding, and a loss that every output element feeds."""

from dataclasses import dataclass

import torch
from torch import nn

from conftest import TINY_MODELS
from peftbench.config import MethodSpec
from peftbench.methods import METHODS
from peftbench.methods.base import Context
from peftbench.models import load_model

# The three families of the method tests, plus a post-attention-norm decoder of another layout (OPT).
ARCHITECTURES = [*TINY_MODELS, "config:tiny-opt"]
INPUT_IDS = torch.randint(1000, 2000, (2, 10), generator=torch.Generator().manual_seed(0))
MASK = torch.tensor([[1] * 10, [1] * 7 + [0] * 3])
LABELS = torch.randint(1000, 2000, (2, 4), generator=torch.Generator().manual_seed(1))


@dataclass
class Built:
    family: str
    model: nn.Module
    context: Context
    base_ids: set[int]  # ids of the base model's tensors, before the method added any

    def method_tensors(self) -> dict[str, nn.Parameter]:
        """Every tensor the method added (trained or frozen) or trains in place."""
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad or id(p) not in self.base_ids}

    def trainable(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}


def build(spec_text: str, model_name: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> Built:
    loaded = load_model(model_name)
    loaded.model.to(dtype)
    base_ids = {id(p) for p in loaded.model.parameters()}
    spec = MethodSpec.parse(spec_text)
    method = METHODS.get(spec.name)
    torch.manual_seed(seed)
    context = Context(family=loaded.family, seed=0)
    return Built(loaded.family, method.apply(loaded.model, method.parse_options(spec), context), context, base_ids)


def output(family: str, model: nn.Module, input_ids: torch.Tensor = INPUT_IDS,
           attention_mask: torch.Tensor | None = MASK) -> torch.Tensor:
    """Logits (decoder, seq2seq) or hidden states (encoder) of the input's own positions: methods that prepend
    virtual tokens (prompt tuning, P-tuning) put them first."""
    if family == "seq2seq":
        return model(input_ids=input_ids, attention_mask=attention_mask, labels=LABELS).logits
    result = model(input_ids=input_ids, attention_mask=attention_mask)
    states = result.last_hidden_state if family == "encoder" else result.logits
    return states[:, -input_ids.shape[1]:]


def projection_loss(family: str, model: nn.Module) -> torch.Tensor:
    """A fixed random projection of every output element: BERT's LayerNorm makes plain sums of squares constant."""
    states = output(family, model)
    return (states * torch.randn(states.shape, generator=torch.Generator().manual_seed(2))).sum()


@torch.no_grad()
def scramble(tensors: dict[str, nn.Parameter], seed: int = 3) -> None:
    """Move every tensor off its initial value, as training would: a factor whose partner starts at zero
    (LoRA's A facing B = 0, an adapter's down-projection facing a zero up-projection) has no effect and no
    gradient until then, which says nothing about whether it is wired in."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in tensors.values():
        noise = torch.randn(2, *parameter.shape, generator=generator).to(parameter.dtype)
        parameter.mul_(1 + 0.1 * noise[0]).add_(0.05 * noise[1])

