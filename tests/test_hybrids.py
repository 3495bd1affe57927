"""MAM and UniPELT (methods/hybrids.py) on the tiny T5, Llama, OPT and BERT: exact counts, what each UniPELT
gate reads and that each acts in eval mode, the prefix gate's exact arithmetic, causality and padding
independence of the per-token gates, every added tensor live, and checkpoints that reload by name."""

import copy
import math

import pytest
import torch

from conftest import assert_live
from peftbench.config import MethodSpec
from peftbench.methods import METHODS
from peftbench.methods.base import Context
from peftbench.methods.hybrids import GatedLoRA
from peftbench.methods.prefix import PrefixGate
from peftbench.models import load_model
from scaffold import assert_checkpoint_reloads

T5, LLAMA, BERT, OPT = "config:tiny-t5", "config:tiny-llama", "config:tiny-bert", "config:tiny-opt"
FAMILIES = [T5, LLAMA, OPT, BERT]
SPECS = ["mam[tokens=4]", "unipelt[tokens=4]"]
IDS = torch.randint(1000, 2000, (2, 9), generator=torch.Generator().manual_seed(0))
LABELS = torch.randint(1000, 2000, (2, 4), generator=torch.Generator().manual_seed(1))


def prefix(width: int, hidden: int, tokens: int = 4, d: int = 32) -> int:
    """One site's prefix network: Embedding(P, d), Linear(d, hidden), Linear(hidden, width)."""
    return tokens * d + d * hidden + hidden + hidden * width + width


# Tiny shapes: d 32, FFN 64, 2 layers per stack; one site's key/value width 2 x 2 x 32 = 128 (Llama 64).
# Parallel adapter (width 16): 528 + 544 = 1,072 per FFN. Gated bottleneck (width 2): 162 + gate 33 = 195.
# Gated LoRA r=8: A 8*in + B out*8 + gate in+1: 545 for 32->32, 417 for Llama's v (32->16).
# Prefix gate Linear(32, 1) = 33 per attention layer (T5: 2 encoder, 2 decoder, 2 cross).
EXPECTED = {
    ("mam[tokens=4]", T5): 4 * 1072 + 3 * prefix(128, 800),  # 391,456
    ("mam[tokens=4]", LLAMA): 2 * 1072 + prefix(64, 800),
    ("mam[tokens=4]", OPT): 2 * 1072 + prefix(128, 800),
    ("mam[tokens=4]", BERT): 2 * 1072 + prefix(128, 800),
    ("mam[tokens=4,hidden=0,sites=encoder]", T5): 4 * 1072 + 4 * 128,
    ("unipelt[tokens=4]", T5): 12 * 545 + 4 * 195 + 3 * prefix(128, 512) + 6 * 33,  # 255,582
    ("unipelt[tokens=4]", LLAMA): 2 * (545 + 417) + 2 * 195 + prefix(64, 512) + 2 * 33,
    ("unipelt[tokens=4]", OPT): 4 * 545 + 2 * 195 + prefix(128, 512) + 2 * 33,
    ("unipelt[tokens=4]", BERT): 4 * 545 + 2 * 195 + prefix(128, 512) + 2 * 33,
}


def build(spec: str, model_name: str, seed: int = 0):
    loaded = load_model(model_name)
    method = METHODS.get(MethodSpec.parse(spec).name)
    torch.manual_seed(seed)
    model = method.apply(loaded.model, method.parse_options(MethodSpec.parse(spec)), Context(family=loaded.family))
    return loaded.family, model.eval()


def output(family: str, model, ids=IDS, mask=None):
    mask = torch.ones_like(ids) if mask is None else mask
    if family == "encoder":
        return model(input_ids=ids, attention_mask=mask).last_hidden_state
    if family == "seq2seq":
        return model(input_ids=ids, attention_mask=mask, labels=LABELS).logits
    return model(input_ids=ids, attention_mask=mask).logits


def added(model, model_name: str) -> dict[str, torch.nn.Parameter]:
    base = {name for name, _ in load_model(model_name).model.named_parameters()}
    return {name.replace(".base_layer", ""): p for name, p in model.named_parameters()
            if name.replace(".base_layer", "") not in base}


def randomise(model, model_name: str) -> None:
    """Every added tensor drawn at random: zero-initialised up-projections would hide their gates."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in added(model, model_name).values():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def gates(model) -> dict[str, list[torch.nn.Linear]]:
    lora = [m.adapter_gate for m in model.modules() if isinstance(m, GatedLoRA)]
    prefix_gates = [m for m in model.modules() if isinstance(m, PrefixGate)]
    adapter = [m.adapter_gate for m in model.modules()
               if hasattr(m, "adapter_gate") and not isinstance(m, GatedLoRA) and hasattr(m, "adapter_bottleneck")]
    return {"lora": lora, "adapter": adapter, "prefix": prefix_gates}


@pytest.mark.parametrize("spec,model_name", list(EXPECTED))
def test_exact_counts_and_ownership(spec, model_name):
    _, model = build(spec, model_name)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == EXPECTED[(spec, model_name)]
    owns = METHODS.get(MethodSpec.parse(spec).name).owns
    assert trainable == {name for name, _ in model.named_parameters() if owns(name)}


@pytest.mark.parametrize("spec,scaling", [("unipelt[tokens=4]", 1.0), ("unipelt[tokens=4,alpha=2]", 2 / 8)])
def test_the_lora_gate_replaces_alpha_over_r(spec, scaling):
    """Mao et al.'s lora_layers.py and AdapterHub's LoRA: base + sigmoid(g(x)) * B A x, the gate in the place
    of alpha/r (r = 8 here); `alpha` given multiplies it by alpha/r. Computed by hand on one wrapped query."""
    _, model = build(spec, BERT)
    randomise(model, BERT)
    layer = model.encoder.layer[0].attention.self.query
    assert isinstance(layer, GatedLoRA)
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(3))
    base, a, b, gate = layer.base_layer, layer.adapter_lora_a.weight, layer.adapter_lora_b.weight, layer.adapter_gate
    by_hand = x @ base.weight.T + base.bias + torch.sigmoid(x @ gate.weight.T + gate.bias) * scaling * (x @ a.T @ b.T)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), by_hand, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("model_name", FAMILIES)
def test_unipelt_has_its_three_gates_at_every_site(model_name):
    _, model = build("unipelt[tokens=4]", model_name)
    found = gates(model)
    attention_layers = 6 if model_name == T5 else 2
    assert {kind: len(found[kind]) for kind in found} == {"lora": 2 * attention_layers, "adapter": 4 if model_name == T5
                                                          else 2, "prefix": attention_layers}
    assert all(gate.out_features == 1 for kind in found for gate in found[kind])
    for kind in ("lora", "prefix"):  # Mao et al.'s initialisation: N(0, 0.02) weights, zero bias
        weights = torch.cat([gate.weight.flatten() for gate in found[kind]])
        assert 0.015 < float(weights.std()) < 0.025 and all(not gate.bias.any() for gate in found[kind])


@pytest.mark.parametrize("model_name", FAMILIES)
@pytest.mark.parametrize("kind", ["lora", "adapter", "prefix"])
def test_each_unipelt_gate_acts_in_eval_mode(kind, model_name):
    family, model = build("unipelt[tokens=4]", model_name)
    randomise(model, model_name)
    with torch.no_grad():
        before = output(family, model)
        for gate in gates(model)[kind]:
            gate.bias.sub_(4.0)
        assert not torch.allclose(output(family, model), before, atol=1e-5), f"the {kind} gate does not act"


@pytest.mark.parametrize("model_name", FAMILIES)
def test_each_unipelt_gate_reads_its_modules_input(model_name):
    """LoRA's gate reads the projection's input, the prefix gate the attention's input, the adapter's gate
    the adapter's input (Mao et al.: gate(x) with x what the gated module reads)."""
    family, model = build("unipelt[tokens=4]", model_name)
    seen: dict[int, torch.Tensor] = {}

    def record(key):
        def hook(module, args, kwargs):
            seen.setdefault(key, kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])
        return hook

    pairs = [(m.adapter_gate, m) for m in model.modules() if isinstance(m, GatedLoRA)]
    pairs += [(m.adapter_gate, m.adapter_bottleneck) for m in model.modules()
              if hasattr(m, "adapter_bottleneck") and getattr(m, "adapter_gate", None) is not None]
    pairs += [(m.prefix_gate, m) for m in model.modules() if hasattr(m, "prefix_gate")]
    assert len(pairs) == sum(len(found) for found in gates(model).values())
    for gate, module in pairs:
        gate.register_forward_pre_hook(record(id(gate)), with_kwargs=True)
        module.register_forward_pre_hook(record(id(module)), with_kwargs=True)
    with torch.no_grad():
        output(family, model)
    for gate, module in pairs:
        torch.testing.assert_close(seen[id(gate)], seen[id(module)], atol=0, rtol=0)


@pytest.mark.parametrize("model_name", FAMILIES)
@pytest.mark.parametrize("value", [1e-9, 0.3, 1 - 1e-9])
def test_the_prefix_gate_scales_prefix_keys_and_values(value, model_name):
    """A constant gate c equals the ungated prefix with keys and values multiplied by c (c -> 0: zero keys and
    values; c -> 1: the plain prefix), the per-query gate computed in one attention call. In float64: in
    float32 the two orders of multiplication differ by rounding, ~1e-5 on T5's logits."""
    family, gated = build("unipelt[tokens=4,hidden=0]", model_name)
    randomise(gated, model_name)
    gated.double()
    with torch.no_grad():
        for gate in gates(gated)["prefix"]:
            gate.weight.zero_()
            gate.bias.fill_(math.log(value / (1 - value)))
        plain = copy.deepcopy(gated)
        for module in plain.modules():
            if hasattr(module, "prefix_slot"):
                module.prefix_slot.gate = None
        for network in plain.prefix_sites.values():
            network.flat.mul_(value)
        torch.testing.assert_close(output(family, gated), output(family, plain), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("model_name", [LLAMA, OPT])
@pytest.mark.parametrize("spec", SPECS)
def test_decoders_stay_causal(spec, model_name):
    """Changing the last token changes no earlier position (UniPELT's gates are per token)."""
    family, model = build(spec, model_name)
    randomise(model, model_name)
    changed = IDS.clone()
    changed[:, -1] += 1
    with torch.no_grad():
        a, b = output(family, model), output(family, model, changed)
    torch.testing.assert_close(a[:, :-1], b[:, :-1], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, -1], b[:, -1])


@pytest.mark.parametrize("model_name", [BERT, T5])
@pytest.mark.parametrize("spec", SPECS)
def test_encoder_outputs_do_not_depend_on_batch_padding(spec, model_name):
    family, model = build(spec, model_name)
    randomise(model, model_name)
    encoder = model.get_encoder() if family == "seq2seq" else model
    short = IDS[:1, :6]
    padded = torch.cat([short, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    with torch.no_grad():
        alone = encoder(input_ids=short, attention_mask=torch.ones_like(short)).last_hidden_state
        in_batch = encoder(input_ids=padded, attention_mask=(padded != 0).long()).last_hidden_state
    torch.testing.assert_close(in_batch[:, :6], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_name", [T5, LLAMA, BERT])
@pytest.mark.parametrize("spec", [f"{spec[:-1]},nonlinearity=gelu]" for spec in SPECS])
def test_every_added_tensor_is_live_in_eval_mode(spec, model_name):
    """(GELU: a width-2 ReLU bottleneck of random weights can be dead on the tiny inputs, which says
    nothing about the method.)"""
    family, model = build(spec, model_name)
    randomise(model, model_name)
    assert_live(model, added(model, model_name), lambda: output(family, model))


@pytest.mark.parametrize("model_name", [T5, LLAMA, BERT])
@pytest.mark.parametrize("spec", SPECS)
def test_state_reloads_by_name(spec, model_name):
    assert_checkpoint_reloads(spec, model_name)