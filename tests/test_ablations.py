"""Layer and module ablations (Pu et al. Table 2) select exactly the intended modules, on every family."""

import pytest

from conftest import run_cli
from peftbench.accounting import count
from peftbench.architectures import parse_layers
from peftbench.config import MethodSpec
from peftbench.errors import UserError
from peftbench.methods import METHODS
from peftbench.methods.base import Context
from peftbench.models import load_model


def _adapted_layers(model_name: str, spec: str, marker: str) -> set[str]:
    """Names of the base layers the method attached `marker` parameters to."""
    loaded = load_model(model_name)
    method = METHODS.get(MethodSpec.parse(spec).name)
    model = method.apply(loaded.model, method.parse_options(MethodSpec.parse(spec)),
                         Context(family=loaded.family, seed=0))
    names = {name.split(f".{marker}")[0] for name, _ in model.named_parameters() if marker in name}
    return {name.removeprefix("base_model.model.") for name in names}


T5_SELF = "{stack}.block.{i}.layer.0.SelfAttention.{p}"
T5_CROSS = "decoder.block.{i}.layer.1.EncDecAttention.{p}"


def _t5(pattern: str, stacks=("encoder", "decoder"), layers=(0, 1), projections=("q", "v")) -> set[str]:
    return {pattern.format(stack=s, i=i, p=p) for s in stacks for i in layers for p in projections}


@pytest.mark.parametrize("spec,expected", [
    ("lora", _t5(T5_SELF) | _t5(T5_CROSS)),
    ("lora[layers=later]", _t5(T5_SELF, layers=(1,)) | _t5(T5_CROSS, layers=(1,))),
    ("lora[layers=0]", _t5(T5_SELF, layers=(0,)) | _t5(T5_CROSS, layers=(0,))),
    ("lora[drop=self_attn]", _t5(T5_CROSS)),
    ("lora[drop=cross_attn]", _t5(T5_SELF)),
    ("lora[targets=qkvo,drop=attn_qo]", _t5(T5_SELF, projections=("k", "v")) | _t5(T5_CROSS, projections=("k", "v"))),
    ("lora[targets=all-linear,modules=ffn,layers=early]",
     {f"{s}.block.0.layer.{1 if s == 'encoder' else 2}.DenseReluDense.{w}" for s in ("encoder", "decoder")
      for w in ("wi_0", "wi_1", "wo")}),
])
def test_lora_selection_on_t5(spec, expected):
    assert _adapted_layers("config:tiny-t5", spec, "lora_A") == expected


def test_ia3_drop_ffn_and_drop_attention():
    kv = _t5(T5_SELF, projections=("k", "v")) | _t5(T5_CROSS, projections=("k", "v"))
    wo = {f"{s}.block.{i}.layer.{1 if s == 'encoder' else 2}.DenseReluDense.wo"
          for s in ("encoder", "decoder") for i in (0, 1)}
    assert _adapted_layers("config:tiny-t5", "ia3", "ia3_l") == kv | wo
    assert _adapted_layers("config:tiny-t5", "ia3[drop=ffn]", "ia3_l") == kv
    assert _adapted_layers("config:tiny-t5", "ia3[modules=ffn]", "ia3_l") == wo


@pytest.mark.parametrize("model_name,expected", [
    ("config:tiny-llama", {"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"}),
    ("config:tiny-bert", {"encoder.layer.1.attention.self.query", "encoder.layer.1.attention.self.value"}),
])
def test_same_names_work_on_decoders_and_encoders(model_name, expected):
    assert _adapted_layers(model_name, "lora[layers=later]", "lora_A") == expected
    assert _adapted_layers(model_name, "lora[drop=cross_attn]", "lora_A") >= expected  # no cross-attention: a no-op


def test_random_layers_are_half_per_stack_seeded_and_recorded():
    first = count("config:t5-large", "lora[layers=random]", seed=0)
    again = count("config:t5-large", "lora[layers=random]", seed=0)
    other = count("config:t5-large", "lora[layers=random]", seed=1)
    layers = first.chosen["layers"]
    assert set(layers) == {"encoder.block", "decoder.block"} and all(len(v) == 12 for v in layers.values())
    assert layers == again.chosen["layers"] and layers != other.chosen["layers"]
    assert first.trainable == count("config:t5-large", "lora[layers=early]").trainable


def test_parse_layers_lists_and_ranges():
    assert parse_layers("0,1,5-7", depth=8, seed=0) == [0, 1, 5, 6, 7]
    assert parse_layers("early", depth=5, seed=0) == [0, 1] and parse_layers("later", depth=5, seed=0) == [2, 3, 4]


@pytest.mark.parametrize("spec,message", [
    ("lora[layers=5]", "asks for layer 5 but the model has 2 layers per stack"),
    ("lora[layers=first]", "layers='first' is not understood"),
    ("lora[drop=self_atn]", "unknown module group 'self_atn'. Did you mean 'self_attn'?"),
    ("lora[targets=qx]", "unknown projection"),
    ("lora[modules=ffn]", "leaves no layer to adapt"),  # q,v targets inside the FFN: nothing
])
def test_bad_selections_name_the_fix(spec, message):
    with pytest.raises(UserError, match=message):
        _adapted_layers("config:tiny-t5", spec, "lora_A")


def test_params_command_bad_layers_exit_2():
    code, out, err = run_cli("params", "config:tiny-t5", "--method", "lora[layers=9]")
    assert code == 2 and "layers per stack" in err and out == "" and len(err.strip().splitlines()) == 1
