"""The adapter methods of methods/adapters.py and compacter.py on the three tiny architectures: exact
trainable counts, AdapterHub's initialisations (identity only with a zero up-projection), the ablation
selection, where the residual taps sit and that a missing one fails loudly, PHM Kronecker sums, causality
and padding independence, and checkpoints that reload by name. Where each adapter reads
and adds is checked against AdapterHub's formulas in test_adapter_placement.py; that every adapter tensor
acts in eval mode, in test_method_zoo.py. MAM and UniPELT: tests/test_hybrids.py."""

import pytest
import torch

from conftest import TINY_MODELS, assert_same_function
from peftbench.config import MethodSpec
from peftbench.errors import UserError
from peftbench.methods import METHODS
from peftbench.methods.adapters import ParallelAdapter, SerialAdapter
from peftbench.methods.compacter import PHMLinear
from peftbench.models import load_model
from scaffold import INPUT_IDS, assert_checkpoint_reloads, build, output, train_steps

pytestmark = pytest.mark.usefixtures("one_thread")

# With a zero up-projection (AdapterHub's mam_adapter init, ParBn's default) an adapter starts as the identity.
IDENTITY = ["houlsby[init=mam_adapter]", "pfeiffer[init=mam_adapter]",
            "pfeiffer[init=mam_adapter,placement=before_residual]", "parallel_adapter"]
ALL = ["houlsby", "pfeiffer", "parallel_adapter", "compacter", "compacter_pp"]

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

def _build(spec: str, model_name: str, seed: int = 0):
    built = build(spec, model_name, seed)
    return built.family, built.model


def _output(family: str, model, input_ids=INPUT_IDS, attention_mask=None) -> torch.Tensor:
    return output(family, model, input_ids, attention_mask)


def _trainable(model) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


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
def test_identity_at_initialisation_with_a_zero_up_projection(spec, model_name):
    base = load_model(model_name).model.eval()
    family, model = _build(spec, model_name)
    with torch.no_grad():
        torch.testing.assert_close(_output(family, model.eval()), _output(family, base), atol=0, rtol=0)


@pytest.mark.parametrize("spec", ["houlsby", "pfeiffer", "compacter", "compacter_pp"])
def test_adapterhub_initialisation_is_not_the_identity(spec):
    """AdapterHub starts these at random (BERT init; Compacter's rule N(0, 1e-4)), not at zero: the adapted
    model differs from the base by a little, as it does there."""
    base = load_model("config:tiny-bert").model.eval()
    family, model = _build(spec, "config:tiny-bert")
    assert not METHODS.get(spec).identity_init
    with torch.no_grad():
        difference = (_output(family, model.eval()) - _output(family, base)).abs().max().item()
    assert 0 < difference < 0.1


def test_initialisations_follow_adapterhub():
    """bert: N(0, 0.02) weights; houlsby: N(0, 1e-2) cut at 2 std; mam_adapter: zero up; biases zero."""
    for spec, check in [("pfeiffer", lambda w: abs(w.std().item() - 0.02) < 0.004),
                        ("pfeiffer[init=houlsby]", lambda w: w.abs().max() <= 0.02 and 0.005 < w.std() < 0.01),
                        ("parallel_adapter", None)]:
        _, model = _build(spec, "config:tiny-t5")
        bottleneck = model.encoder.block[0].layer[1].DenseReluDense.wo.adapter_bottleneck
        down, up = bottleneck.down, bottleneck.up
        assert not down.bias.any() and not up.bias.any()
        if check is None:  # mam_adapter: nn.Linear's Kaiming-uniform down, zero up
            assert not up.weight.any() and down.weight.abs().max() <= 1 / 32 ** 0.5
        else:
            assert check(torch.cat([down.weight.flatten(), up.weight.flatten()])), spec


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


def test_residual_taps_sit_on_the_chosen_layers_only():
    _, model = _build("parallel_adapter[layers=1]", "config:tiny-bert")
    assert _wrapped(model, ParallelAdapter) == ["encoder.layer.1.output.dense"]
    hooked = [name for name, module in model.named_modules() if module._forward_pre_hooks]
    assert hooked == ["encoder.layer.1.intermediate.dense"]  # post-LN: the FFN's input is the stream
    _, model = _build("pfeiffer[layers=0]", "config:tiny-t5")
    hooked = [name for name, module in model.named_modules() if module._forward_pre_hooks]
    assert hooked == ["encoder.block.0.layer.1.layer_norm", "decoder.block.0.layer.2.layer_norm"]  # pre-LN
    _, model = _build("houlsby", "config:tiny-t5")  # reads the sublayer's own output: no tap
    assert not any(module._forward_pre_hooks for module in model.modules())


def test_an_adapter_whose_tap_does_not_run_fails_loudly():
    family, model = _build("pfeiffer", "config:tiny-t5")
    ffn = model.encoder.block[0].layer[1]
    ffn.layer_norm = type(ffn.layer_norm)(32)  # a fresh norm without the adapter's hook
    with pytest.raises(RuntimeError, match="residual tap did not run"):
        _output(family, model)


def test_no_activation_is_kept_after_the_forward():
    family, model = _build("parallel_adapter", "config:tiny-llama")
    with torch.no_grad():
        _output(family, model)
    assert all(module.stream is None for module in model.modules() if isinstance(module, (ParallelAdapter,
                                                                                          SerialAdapter)))


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
    train_steps(family, model)
    changed = INPUT_IDS.clone()
    changed[:, -1] += 1
    with torch.no_grad():
        a, b = _output(family, model.eval().double()), _output(family, model, changed)
    assert_same_function(a[:, :-1], b[:, :-1])
    assert not torch.allclose(a[:, -1], b[:, -1])


@pytest.mark.parametrize("spec", ALL)
def test_encoder_outputs_do_not_depend_on_batch_padding(spec):
    family, model = _build(spec, "config:tiny-bert")
    train_steps(family, model)
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
    assert_checkpoint_reloads(spec, model_name)