"""The adapter methods of methods/adapters.py on the three tiny architectures: exact trainable counts,
identity at initialisation, only adapters move, gradients reach every adapter tensor, the ablation
selection, the placement arithmetic (parallel adapter, PHM Kronecker sums), causality and padding
independence, and checkpoints that reload by name (MAM and UniPELT: tests/test_hybrids.py)."""

import pytest
import torch

from conftest import TINY_MODELS, assert_same_function
from peftbench.config import MethodSpec
from peftbench.errors import UserError
from peftbench.methods import METHODS
from peftbench.methods.adapters import FeedForwardTap, ParallelAdapter, PHMLinear, SerialAdapter
from peftbench.methods.base import Context
from peftbench.models import load_model

IDENTITY = ["houlsby", "pfeiffer", "parallel_adapter", "compacter", "compacter_pp"]
ALL = IDENTITY
# A width-2 ReLU bottleneck can die on the tiny random models (hidden states of ~0.01 against AdamW steps
# of the learning rate), leaving it without gradient for good; training checks use GELU, which cannot.
SMOOTH = ["houlsby[nonlinearity=gelu]", "pfeiffer[nonlinearity=gelu]", "parallel_adapter[nonlinearity=gelu]",
          "compacter", "compacter_pp"]

# Tiny configs: d=32, FFN 64, 2 layers per stack (T5: encoder + decoder stacks, so 4 layers).
# Bottleneck (reduction 16 -> width 2): down 32*2+2 = 66, up 2*32+32 = 96 -> 162 per adapter.
# Parallel (reduction 2 -> width 16): down 32*16+16 = 528, up 16*32+32 = 544 -> 1,072 per layer.
# Compacter (reduction 32 -> 1, rounded up to n=4): down PHM 32->4: s 4*8*1 + t 4*1*1 + bias 4 = 40;
#   up PHM 4->32: s 4*1*1 + t 4*1*8 + bias 32 = 68 -> 108 per adapter, plus 4*4*4 = 64 shared once.


EXPECTED = {
    "houlsby": {"config:tiny-t5": 8 * 162, "config:tiny-llama": 4 * 162, "config:tiny-bert": 4 * 162},
    "pfeiffer": {"config:tiny-t5": 4 * 162, "config:tiny-llama": 2 * 162, "config:tiny-bert": 2 * 162},
    "parallel_adapter": {"config:tiny-t5": 4 * 1072, "config:tiny-llama": 2 * 1072, "config:tiny-bert": 2 * 1072},
    "compacter": {"config:tiny-t5": 8 * 108 + 64, "config:tiny-llama": 4 * 108 + 64,
                  "config:tiny-bert": 4 * 108 + 64},
    "compacter_pp": {"config:tiny-t5": 4 * 108 + 64, "config:tiny-llama": 2 * 108 + 64,
                     "config:tiny-bert": 2 * 108 + 64},
}
# On tiny T5 that is houlsby 1,296.

INPUT_IDS = torch.randint(1000, 2000, (2, 10), generator=torch.Generator().manual_seed(0))
LABELS = torch.randint(1000, 2000, (2, 4), generator=torch.Generator().manual_seed(1))


def _build(spec: str, model_name: str, seed: int = 0):
    loaded = load_model(model_name)
    method = METHODS.get(MethodSpec.parse(spec).name)
    torch.manual_seed(seed)
    model = method.apply(loaded.model, method.parse_options(MethodSpec.parse(spec)), Context(family=loaded.family))
    return loaded.family, model


def _output(family: str, model, input_ids=INPUT_IDS, attention_mask=None) -> torch.Tensor:
    if family == "encoder":
        return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    if family == "seq2seq":
        return model(input_ids=input_ids, labels=LABELS).logits
    return model(input_ids=input_ids, attention_mask=attention_mask).logits


def _loss(family: str, model) -> torch.Tensor:
    # A fixed random projection of the outputs: BERT's LayerNorm makes plain sums of squares constant.
    output = _output(family, model)
    return (output * torch.randn(output.shape, generator=torch.Generator().manual_seed(2))).sum()


def _trainable(model) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _steps(family: str, model, steps: int = 3) -> None:
    optimizer = torch.optim.AdamW(_trainable(model).values(), lr=1e-2, weight_decay=0.0)
    for _ in range(steps):
        optimizer.zero_grad()
        _loss(family, model).backward()
        optimizer.step()


def _wrapped(model, kind=SerialAdapter) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, kind)]


@pytest.mark.parametrize("model_name", TINY_MODELS)
@pytest.mark.parametrize("spec", EXPECTED)
def test_exact_trainable_counts_and_ownership(spec, model_name):
    _, model = _build(spec, model_name)
    trainable = _trainable(model)
    assert sum(p.numel() for p in trainable.values()) == EXPECTED[spec][model_name]
    owns = METHODS.get(MethodSpec.parse(spec).name).owns
    assert all(owns(name) == (name in trainable) for name, _ in model.named_parameters())


@pytest.mark.parametrize("model_name", TINY_MODELS)
@pytest.mark.parametrize("spec", IDENTITY)
def test_identity_at_initialisation(spec, model_name):
    assert METHODS.get(spec).identity_init
    base = load_model(model_name).model.eval()
    family, model = _build(spec, model_name)
    with torch.no_grad():
        torch.testing.assert_close(_output(family, model.eval()), _output(family, base), atol=0, rtol=0)


@pytest.mark.parametrize("model_name", TINY_MODELS)
@pytest.mark.parametrize("spec", SMOOTH)
def test_training_moves_adapters_only_and_every_adapter_tensor_gets_gradient(spec, model_name):
    family, model = _build(spec, model_name)
    model.train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    _steps(family, model)
    after = dict(model.named_parameters())
    trainable = _trainable(model)
    assert [n for n in before if n not in trainable and not torch.equal(before[n], after[n])] == []
    assert [n for n in trainable if torch.equal(before[n], after[n])] == []
    # Up-projections start at zero, so the first step gives the down-projections no gradient; by now
    # every adapter tensor must receive one.
    for parameter in trainable.values():
        parameter.grad = None
    _loss(family, model).backward()
    assert [n for n, p in trainable.items() if p.grad is None or not p.grad.any()] == []


def test_layers_0_adapts_the_first_layer_of_each_stack():
    _, model = _build("houlsby[layers=0]", "config:tiny-t5")
    assert _wrapped(model) == ["encoder.block.0.layer.0.SelfAttention.o", "encoder.block.0.layer.1.DenseReluDense.wo",
                               "decoder.block.0.layer.0.SelfAttention.o", "decoder.block.0.layer.2.DenseReluDense.wo"]


def test_drop_ffn_keeps_the_attention_adapters():
    _, model = _build("houlsby[drop=ffn]", "config:tiny-llama")
    assert _wrapped(model) == ["model.layers.0.self_attn.o_proj", "model.layers.1.self_attn.o_proj"]
    _, model = _build("compacter[drop=self_attn]", "config:tiny-bert")
    assert _wrapped(model) == ["encoder.layer.0.output.dense", "encoder.layer.1.output.dense"]
    with pytest.raises(UserError, match="leaves no layer to adapt"):
        _build("pfeiffer[drop=ffn]", "config:tiny-bert")


def test_parallel_adapter_taps_the_ffn_input_of_the_chosen_layer():
    _, model = _build("parallel_adapter[layers=1]", "config:tiny-bert")
    assert _wrapped(model, ParallelAdapter) == ["encoder.layer.1.output.dense"]
    assert _wrapped(model, FeedForwardTap) == ["encoder.layer.1.intermediate.dense"]


def test_parallel_adapter_adds_the_scaled_bottleneck_of_the_ffn_input():
    """Llama's MLP: down(act(gate(x)) * up(x)) + scale * adapter(x), x being the MLP's input."""
    base_mlp = load_model("config:tiny-llama").model.model.layers[0].mlp
    _, model = _build("parallel_adapter[scale=2.5]", "config:tiny-llama")
    mlp = model.model.layers[0].mlp
    adapter = mlp.down_proj.adapter_bottleneck
    torch.nn.init.normal_(adapter.up.weight)
    x = torch.randn(3, 5, 32)
    with torch.no_grad():
        expected = base_mlp(x) + 2.5 * adapter.up(torch.relu(adapter.down(x)))
        torch.testing.assert_close(mlp(x), expected)
    assert mlp.down_proj.ffn_input is None  # no activation kept after the call


def test_phm_weight_is_a_sum_of_kronecker_products_with_one_shared_rule():
    _, model = _build("compacter", "config:tiny-t5")
    layers = [m for m in model.modules() if isinstance(m, PHMLinear)]
    assert len(layers) == 16 and len({id(layer.shared) for layer in layers}) == 1
    layer = layers[0]  # 32 -> 4, n = 4
    torch.nn.init.normal_(layer.bias)
    fast = layer.left @ layer.right
    weight = sum(torch.kron(layer.shared[i], fast[i]) for i in range(4))
    assert weight.shape == (32, 4)
    x = torch.randn(2, 32)
    torch.testing.assert_close(layer(x), x @ weight + layer.bias)


def test_compacter_needs_n_to_divide_the_hidden_size():
    with pytest.raises(UserError, match="n=5 must divide the hidden size 32"):
        _build("compacter[n=5]", "config:tiny-bert")


@pytest.mark.parametrize("spec", ALL)
def test_decoders_stay_causal(spec):
    """Changing the last token changes no earlier position's logits (UniPELT's gates are per token)."""
    family, model = _build(spec, "config:tiny-llama")
    _steps(family, model)
    changed = INPUT_IDS.clone()
    changed[:, -1] += 1
    with torch.no_grad():
        a, b = _output(family, model.eval().double()), _output(family, model, changed)
    assert_same_function(a[:, :-1], b[:, :-1])
    assert not torch.allclose(a[:, -1], b[:, -1])


@pytest.mark.parametrize("spec", ALL)
def test_encoder_outputs_do_not_depend_on_batch_padding(spec):
    family, model = _build(spec, "config:tiny-bert")
    _steps(family, model)
    model.eval().double()
    short = INPUT_IDS[:1, :6]
    padded = torch.cat([short, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    with torch.no_grad():
        alone = _output(family, model, short, torch.ones_like(short))
        in_batch = _output(family, model, padded, (padded != 0).long())
    assert_same_function(in_batch[:, :6], alone)


@pytest.mark.parametrize("model_name", TINY_MODELS)
@pytest.mark.parametrize("spec", ALL)
def test_adapter_state_reloads_by_name(spec, model_name):
    family, model = _build(spec, model_name)
    _steps(family, model)
    state = {name: p.detach().clone() for name, p in _trainable(model).items()}
    _, fresh = _build(spec, model_name, seed=1)
    result = fresh.load_state_dict(state, strict=False)
    assert result.unexpected_keys == []
    owns = METHODS.get(MethodSpec.parse(spec).name).owns
    # Compacter's shared matrices are one tensor under every layer's name: loading it once sets them all.
    assert [key for key in result.missing_keys if owns(key) and not key.endswith(".shared")] == []
    with torch.no_grad():
        torch.testing.assert_close(_output(family, fresh.eval()), _output(family, model.eval()), atol=0, rtol=0)
