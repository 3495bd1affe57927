"""What the method tests share: a method applied to a tiny architecture, its outputs on a fixed batch with
padding, and a loss that every output element feeds."""

from dataclasses import dataclass

import torch
from torch import nn

from conftest import TINY_MODELS
from peftbench.artifacts import own_tensor_ids, trained_tensors
from peftbench.config import MethodSpec
from peftbench.heads import MeanPoolClassifier
from peftbench.methods import METHODS
from peftbench.methods.base import Context
from peftbench.models import load_model

# Small settings where a method's defaults are too big for the tiny models, or it needs an option there.
# ReLU bottlenecks get GELU: on the tiny models a width-2 ReLU bottleneck can have both units off for the
# whole batch (its biases, moved by noise, outweigh activations of ~0.01), a draw of the random model that
# leaves its tensors without effect; GELU is nowhere flat.
TEST_SPECS = {"prompt_tuning": "prompt_tuning[tokens=4]", "prefix_tuning": "prefix_tuning[tokens=4]",
              "p_tuning": "p_tuning[tokens=4]", "bitfit": "bitfit[add_bias=true]",
              "pfeiffer": "pfeiffer[nonlinearity=gelu]", "parallel_adapter": "parallel_adapter[nonlinearity=gelu]",
              "mam": "mam[tokens=4,nonlinearity=gelu]", "unipelt": "unipelt[tokens=4,nonlinearity=gelu]",
              # PEFT tuners whose defaults need wider layers than the tiny models' 32 (Llama's value: 16 x 32)
              "fourierft": "fourierft[n_frequency=100]", "waveft": "waveft[n_frequency=100]", "miss": "miss[r=8]",
              "c3a": "c3a[block_size=16]", "shira": "shira[r=4]",
              # a bank of 8 vectors: with 256, vectors that no layer picks among its top-k get no gradient
              "vblora": "vblora[vector_length=16,num_vectors=8]",
              "road": "road[group_size=8]"}
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
    base_ids = set(own_tensor_ids(loaded.model))
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


def task_loss(family: str, model: nn.Module) -> torch.Tensor:
    """The training losses peftbench uses: LM loss, or cross-entropy through a (frozen) mean-pooling head."""
    if family == "encoder":
        torch.manual_seed(0)  # the same head every call
        classifier = MeanPoolClassifier(model, model.config.hidden_size, 3)
        classifier.head.requires_grad_(False)
        return nn.functional.cross_entropy(classifier(INPUT_IDS, MASK), torch.tensor([0, 2]))
    if family == "seq2seq":
        return model(input_ids=INPUT_IDS, attention_mask=MASK, labels=LABELS).loss
    return model(input_ids=INPUT_IDS, attention_mask=MASK, labels=INPUT_IDS.masked_fill(MASK == 0, -100)).loss


def train_steps(family: str, model: nn.Module, loss=None, steps: int = 3) -> None:
    """A few AdamW steps (lr 1e-2, no weight decay, so only parameters that got gradients move), then eval mode."""
    loss = loss or projection_loss
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss(family, model).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def assert_checkpoint_reloads(spec_text: str, model_name: str) -> None:
    """What a run saves (artifacts.trained_tensors) turns a freshly built model with another init into the
    trained one: every tensor equal, outputs equal bit for bit. Before loading, the fresh model must differ
    from the trained one, or the comparison would prove nothing."""
    built = build(spec_text, model_name)
    train_steps(built.family, built.model)
    checkpoint = trained_tensors(built.model, frozenset(built.base_ids))
    fresh = build(spec_text, model_name, seed=123).model.eval()
    trained_state = built.model.state_dict()
    with torch.no_grad():
        assert not torch.equal(output(built.family, fresh), output(built.family, built.model)), "nothing to reload"
        result = fresh.load_state_dict(checkpoint, strict=False)
        assert result.unexpected_keys == []
        unequal = [key for key, value in fresh.state_dict().items() if not torch.equal(value, trained_state[key])]
        assert unequal == [], f"{spec_text}: the checkpoint leaves these tensors as the fresh model has them"
        torch.testing.assert_close(output(built.family, fresh), output(built.family, built.model), atol=0, rtol=0)


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



@torch.no_grad()
def pretrained_biases(built: Built, seed: int = 5) -> None:
    """Give the frozen base biases values, as a pretrained model has them: the random tiny BERT and OPT start
    every bias at zero, which leaves a method that scales a base bias (GLoRA's b0 * D) without any effect."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in built.model.named_parameters():
        if name.endswith("bias") and not parameter.requires_grad and id(parameter) in built.base_ids:
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator).to(parameter.dtype))
