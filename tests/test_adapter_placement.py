"""Where each adapter reads and what it adds, against AdapterHub's formulas (methods/modeling.py
Adapter.pre_forward / forward / post_forward with the configs' flags), in eval mode on one sublayer of each
tiny architecture. h is the sublayer's output before its residual add, x the residual stream entering it,
N the post-LN norm (BERT) and f the adapter's bottleneck:

    SeqBn (pfeiffer, compacter_pp)   N(x + h + f(N(x + h)))   pre-LN: s + f(s), s = x + h
    DoubleSeqBn (houlsby, compacter) N(x + h + f(h))
    ParBn (parallel_adapter)         N(x + h + scale * f(x))
"""

import pytest
import torch

from peftbench.methods.adapters import ParallelAdapter, SerialAdapter
from scaffold import build

pytestmark = pytest.mark.usefixtures("one_thread")


def _call_of(model, module_name: str, run) -> tuple[tuple, dict]:
    """The arguments `module_name` is called with (its first call) while `run()` runs the model."""
    seen = []
    handle = model.get_submodule(module_name).register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((args, kwargs)), with_kwargs=True)
    with torch.no_grad():
        run()
    handle.remove()
    return seen[0]


def _adapter_in(module) -> SerialAdapter | ParallelAdapter:
    (adapter,) = [m for m in module.modules() if isinstance(m, (SerialAdapter, ParallelAdapter))]
    return adapter


@torch.no_grad()
def _without(adapter, call):
    """`call()` with the adapter's up-projection at zero, i.e. the base sublayer."""
    up = adapter.adapter_bottleneck.up
    saved = [p.detach().clone() for p in up.parameters()]
    for p in up.parameters():
        p.zero_()
    result = call()
    for p, value in zip(up.parameters(), saved):
        p.copy_(value)
    return result


def _prepared(spec: str, model_name: str):
    built = build(spec, model_name)
    model = built.model.eval()
    ids = torch.randint(1000, 2000, (2, 6), generator=torch.Generator().manual_seed(0))
    kwargs = {"labels": ids[:, :3].contiguous()} if built.family == "seq2seq" else {}
    return model, lambda: model(input_ids=ids, **kwargs)


# T5's FFN sublayer T5LayerFF(x) = x + DenseReluDense(layer_norm(x)): checked at the sublayer itself.
@pytest.mark.parametrize("spec,expected", [
    ("pfeiffer", lambda x, base, f, adapter: base + f(base)),
    ("pfeiffer[placement=before_residual]", lambda x, base, f, adapter: base + f(base - x)),
    ("compacter_pp", lambda x, base, f, adapter: base + f(base)),
    ("houlsby", lambda x, base, f, adapter: base + f(base - x)),
    ("parallel_adapter", lambda x, base, f, adapter: base + adapter.scale * f(x)),
])
def test_t5_ffn_sublayer(spec, expected):
    model, run = _prepared(spec, "config:tiny-t5")
    sublayer = model.decoder.block[1].layer[2]
    (x,), _ = _call_of(model, "decoder.block.1.layer.2", run)
    adapter = _adapter_in(sublayer)
    for name, p in adapter.adapter_bottleneck.up.named_parameters():  # an effect well above rounding
        if name != "bias":
            torch.nn.init.normal_(p, std=0.5)
    with torch.no_grad():
        live = sublayer(x)
        base = _without(adapter, lambda: sublayer(x))
        torch.testing.assert_close(live, expected(x, base, adapter.adapter_bottleneck, adapter))
    assert (live - base).abs().max() > 1e-5


# Pre-LN decoders: the FFN's residual add ends the layer, so SeqBn reads the layer's output s and adds f(s);
# ParBn reads the stream entering the FFN, the input of the pre-FFN norm (not the normalised FFN input).
@pytest.mark.parametrize("model_name,layer,pre_ffn_norm", [
    ("config:tiny-llama", "model.layers.1", "post_attention_layernorm"),
    ("config:tiny-opt", "model.decoder.layers.1", "final_layer_norm"),
])
@pytest.mark.parametrize("spec", ["pfeiffer", "parallel_adapter"])
def test_pre_ln_decoder_layer(spec, model_name, layer, pre_ffn_norm):
    model, run = _prepared(spec, model_name)
    args, kwargs = _call_of(model, layer, run)
    (stream,), _ = _call_of(model, f"{layer}.{pre_ffn_norm}", run)
    block = model.get_submodule(layer)
    adapter = _adapter_in(block)
    f = adapter.adapter_bottleneck
    torch.nn.init.normal_(f.up.weight, std=0.5)
    with torch.no_grad():
        live = block(*args, **kwargs)
        base = _without(adapter, lambda: block(*args, **kwargs))
        added = f(base) if spec == "pfeiffer" else adapter.scale * f(stream).view_as(base)
        torch.testing.assert_close(live, base + added)
    assert (live - base).abs().max() > 1e-5


# BERT (post-LN): BertOutput(i, x) = LayerNorm(dropout(dense(i)) + x), x the attention output (the FFN input).
@pytest.mark.parametrize("spec,expected", [
    ("pfeiffer", lambda x, h, norm, f, adapter: norm(x + h + f(norm(x + h)))),
    ("houlsby", lambda x, h, norm, f, adapter: norm(x + h + f(h))),
    ("parallel_adapter", lambda x, h, norm, f, adapter: norm(x + h + adapter.scale * f(x))),
])
def test_bert_ffn_sublayer(spec, expected):
    model, run = _prepared(spec, "config:tiny-bert")
    bert_layer = model.encoder.layer[1]
    (x,), _ = _call_of(model, "encoder.layer.1.intermediate", run)
    adapter = bert_layer.output.dense
    torch.nn.init.normal_(adapter.adapter_bottleneck.up.weight, std=0.5)
    with torch.no_grad():
        live = bert_layer.feed_forward_chunk(x)
        h = adapter.base_layer(bert_layer.intermediate(x))
        torch.testing.assert_close(live, expected(x, h, bert_layer.output.LayerNorm, adapter.adapter_bottleneck,
                                                  adapter))
        assert (live - bert_layer.output.LayerNorm(x + h)).abs().max() > 1e-5


def test_houlsby_attention_adapter_reads_the_attention_output():
    """DoubleSeqBn's mh_adapter: the attention projection's output o becomes o + f(o), before the residual."""
    model, run = _prepared("houlsby", "config:tiny-llama")
    (attended,), _ = _call_of(model, "model.layers.0.self_attn.o_proj.base_layer", run)
    adapter = model.model.layers[0].self_attn.o_proj
    torch.nn.init.normal_(adapter.adapter_bottleneck.up.weight, std=0.5)
    with torch.no_grad():
        o = adapter.base_layer(attended)
        torch.testing.assert_close(adapter(attended), o + adapter.adapter_bottleneck(o))


def test_seqbn_reads_the_residual_stream_not_the_ffn_output():
    """The two placements differ (the old peftbench pfeiffer was before_residual)."""
    outputs = []
    for spec in ("pfeiffer[init=houlsby]", "pfeiffer[init=houlsby,placement=before_residual]"):
        model, run = _prepared(spec, "config:tiny-t5")
        with torch.no_grad():
            outputs.append(run().logits)
    assert (outputs[0] - outputs[1]).abs().max() > 1e-4


@pytest.mark.parametrize("spec", ["pfeiffer", "parallel_adapter"])
def test_post_ln_opt(spec):
    """OPT-350m's layout (do_layer_norm_before=False): the FFN reads the stream as it is and final_layer_norm
    follows the residual add, as BERT's LayerNorm does."""
    from transformers import OPTConfig, OPTForCausalLM

    from peftbench.config import MethodSpec
    from peftbench.methods import METHODS
    from peftbench.methods.base import Context

    torch.manual_seed(0)
    model = OPTForCausalLM(OPTConfig(vocab_size=100, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                     num_attention_heads=4, word_embed_proj_dim=32, do_layer_norm_before=False))
    method = METHODS.get(MethodSpec.parse(spec).name)
    model = method.apply(model, method.parse_options(MethodSpec.parse(spec)), Context(family="decoder")).eval()
    ids = torch.randint(2, 100, (2, 6), generator=torch.Generator().manual_seed(0))
    layer = model.model.decoder.layers[1]
    (x,), _ = _call_of(model, "model.decoder.layers.1.fc1", lambda: model(input_ids=ids))
    args, kwargs = _call_of(model, "model.decoder.layers.1", lambda: model(input_ids=ids))
    adapter, norm = layer.fc2, layer.final_layer_norm
    f = adapter.adapter_bottleneck
    torch.nn.init.normal_(f.up.weight, std=0.5)
    with torch.no_grad():
        h = adapter.base_layer(layer.activation_fn(layer.fc1(x)))
        added = f(norm(x + h)) if spec == "pfeiffer" else adapter.scale * f(x)
        torch.testing.assert_close(layer(*args, **kwargs).view_as(x), norm(x + h + added))
