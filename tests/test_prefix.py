"""peftbench's prefix tuning (methods/prefix.py) on the tiny T5, Llama, OPT and BERT: exact counts per site,
the prefix at every T5 attention site and only at the chosen ones, the base model's positions and masks
kept for real tokens, `generate` with the KV cache equal to teacher-forced argmax, padding independence,
sdpa equal to eager, every added tensor live in eval mode, and clear errors."""

import copy

import pytest
import torch

from conftest import assert_live
from peftbench.config import MethodSpec
from peftbench.errors import UserError
from peftbench.methods import METHODS
from peftbench.methods.base import Context
from peftbench.methods.prefix import PrefixNetwork
from peftbench.models import load_model

T5, LLAMA, BERT, OPT = "config:tiny-t5", "config:tiny-llama", "config:tiny-bert", "config:tiny-opt"
P = 4  # prefix tokens in these tests
IDS = torch.randint(1000, 2000, (2, 9), generator=torch.Generator().manual_seed(0))
MASK = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])  # the second row is padded
LABELS = torch.randint(1000, 2000, (2, 5), generator=torch.Generator().manual_seed(1))


def mlp(tokens: int, d: int, hidden: int, width: int) -> int:
    """Li & Liang's reparametrisation: Embedding(P, d), Linear(d, hidden), Linear(hidden, width)."""
    return tokens * d + d * hidden + hidden + hidden * width + width


# Tiny shapes: d_model 32, 2 layers per stack; key width 32 (Llama: 2 key/value heads of 8 = 16).
# One site's width = layers x 2 (keys, values) x key width = 128 (Llama 64).
EXPECTED = {
    ("prefix_tuning[tokens=4,hidden=16]", T5): 3 * mlp(4, 32, 16, 128),  # encoder, decoder, cross: 8,496
    ("prefix_tuning[tokens=4,hidden=16,sites=cross]", T5): mlp(4, 32, 16, 128),
    ("prefix_tuning[tokens=4,hidden=16,sites=encoder+decoder]", T5): 2 * mlp(4, 32, 16, 128),
    ("prefix_tuning[tokens=4,hidden=16]", LLAMA): mlp(4, 32, 16, 64),  # 1,744
    ("prefix_tuning[tokens=4,hidden=16]", OPT): mlp(4, 32, 16, 128),
    ("prefix_tuning[tokens=4,hidden=16]", BERT): mlp(4, 32, 16, 128),
    ("prefix_tuning[tokens=4,hidden=0]", T5): 3 * 4 * 128,  # flat: the keys and values themselves
    ("prefix_tuning[tokens=4,hidden=0]", LLAMA): 4 * 64,
    ("prefix_tuning[tokens=4,hidden=0]", BERT): 4 * 128,
}
LIVE = ["prefix_tuning[tokens=4,hidden=16]", "prefix_tuning[tokens=4,hidden=0]"]


def build(spec: str, model_name: str, attention: str | None = None, seed: int = 0):
    loaded = load_model(model_name)
    if attention:
        loaded.model.set_attn_implementation(attention)
    method = METHODS.get(MethodSpec.parse(spec).name)
    torch.manual_seed(seed)
    model = method.apply(loaded.model, method.parse_options(MethodSpec.parse(spec)), Context(family=loaded.family))
    return loaded.family, model.eval()


def base_model(model_name: str, attention: str | None = None):
    model = load_model(model_name).model
    if attention:
        model.set_attn_implementation(attention)
    return model.eval()


def output(family: str, model, ids=IDS, mask=MASK, **extra):
    if family == "encoder":
        return model(input_ids=ids, attention_mask=mask, **extra).last_hidden_state
    if family == "seq2seq":
        return model(input_ids=ids, attention_mask=mask, labels=LABELS, **extra).logits
    return model(input_ids=ids, attention_mask=mask, **extra).logits


def attentions(model):
    """A T5's attention weights per layer (eager attention): encoder, decoder and cross-attention."""
    with torch.no_grad():
        out = model(input_ids=IDS, attention_mask=MASK, labels=LABELS, output_attentions=True)
    return {"encoder": out.encoder_attentions, "decoder": out.decoder_attentions, "cross": out.cross_attentions}


def added(model, base) -> dict[str, torch.nn.Parameter]:
    base_names = {name for name, _ in base.named_parameters()}
    return {name: p for name, p in model.named_parameters() if name not in base_names}


@pytest.mark.parametrize("spec,model_name", list(EXPECTED))
def test_exact_counts_and_ownership(spec, model_name):
    _, model = build(spec, model_name)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == EXPECTED[(spec, model_name)]
    owns = METHODS.get("prefix_tuning").owns
    assert trainable == {name for name, _ in model.named_parameters() if owns(name)}
    assert trainable == set(added(model, base_model(model_name)))  # trains exactly what it adds


def test_each_t5_site_is_switchable_and_the_encoder_output_changes_only_with_its_prefix():
    base = base_model(T5)
    with torch.no_grad():
        reference = base.get_encoder()(input_ids=IDS, attention_mask=MASK).last_hidden_state
        for sites, changes in [("all", True), ("encoder", True), ("decoder+cross", False), ("cross", False)]:
            _, model = build(f"prefix_tuning[tokens=4,sites={sites}]", T5)
            encoded = model.get_encoder()(input_ids=IDS, attention_mask=MASK).last_hidden_state
            assert (not torch.equal(encoded, reference)) == changes, sites
            assert not torch.equal(output("seq2seq", model), output("seq2seq", base))  # every site acts


@pytest.mark.parametrize("sites", ["all", "encoder", "decoder", "cross"])
def test_attention_sees_p_extra_keys_at_exactly_the_chosen_sites(sites):
    _, model = build(f"prefix_tuning[tokens=4,sites={sites}]", T5, attention="eager")
    on = {"encoder", "decoder", "cross"} if sites == "all" else {sites}
    for (kind, weights), keys in zip(attentions(model).items(), (9, 5, 9)):
        extra = P if kind in on else 0
        assert all(w.shape[-1] == keys + extra for w in weights), kind
        if extra:  # every query gives the prefix weight, the padded row's queries included
            assert all((w[..., :P].sum(-1) > 0).all() for w in weights), kind


def _renormalised_real(weights: torch.Tensor) -> torch.Tensor:
    real = weights[..., P:]
    return real / real.sum(-1, keepdim=True)


@pytest.mark.parametrize("sites", ["encoder", "decoder", "cross"])
def test_real_keys_keep_t5s_relative_position_bias_and_masks(sites):
    """In the first layer (same inputs as the base model) the attention among real tokens, renormalised,
    is the base model's: the prefix shifts no relative distance and opens no masked position."""
    expected = attentions(base_model(T5, "eager"))[sites][0]
    got = attentions(build(f"prefix_tuning[tokens=4,sites={sites}]", T5, attention="eager")[1])[sites][0]
    torch.testing.assert_close(_renormalised_real(got), expected, atol=1e-6, rtol=1e-5)


def _greedy(model, ids, mask, steps: int = 6):
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps, do_sample=False,
                              num_beams=1, eos_token_id=None, pad_token_id=0)


@pytest.mark.parametrize("sites", ["all", "encoder", "decoder", "cross"])
def test_t5_generate_with_the_kv_cache_equals_teacher_forced_argmax(sites):
    _, model = build(f"prefix_tuning[tokens=4,sites={sites}]", T5)
    generated = _greedy(model, IDS, MASK)  # decoder start token, then 6 tokens
    with torch.no_grad():
        logits = model(input_ids=IDS, attention_mask=MASK, decoder_input_ids=generated[:, :-1]).logits
    assert torch.equal(logits.argmax(-1), generated[:, 1:])
    assert not torch.equal(generated, _greedy(base_model(T5), IDS, MASK))  # the prefix changed the answers


@pytest.mark.parametrize("model_name", [LLAMA, OPT])
@pytest.mark.parametrize("spec", ["prefix_tuning[tokens=4]", "mam[tokens=4]", "unipelt[tokens=4]"])
def test_decoder_generate_with_left_padding_equals_teacher_forced_argmax(spec, model_name):
    _, model = build(spec, model_name)
    for p in added(model, base_model(model_name)).values():  # zero-initialised adapters must act too
        torch.nn.init.normal_(p, std=0.5, generator=torch.Generator().manual_seed(3))
    ids, mask = IDS.flip(1), MASK.flip(1)  # left padding, as peftbench generates with decoders
    generated = _greedy(model, ids, mask)
    full_mask = torch.cat([mask, torch.ones_like(generated[:, ids.shape[1]:])], 1)[:, :-1]
    # generate counts positions from each row's first real token. Attention to a prefix, which has no
    # position, depends on the query's own rotary position, so teacher forcing must count the same way.
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=generated[:, :-1], attention_mask=full_mask, position_ids=positions).logits
    assert torch.equal(logits[:, ids.shape[1] - 1:].argmax(-1), generated[:, ids.shape[1]:])


@pytest.mark.parametrize("model_name", [T5, BERT, LLAMA])
def test_outputs_do_not_depend_on_batch_padding(model_name):
    family, model = build("prefix_tuning[tokens=4]", model_name)
    alone = IDS[1:, :6]
    with torch.no_grad():
        if family == "seq2seq":
            padded = model.get_encoder()(input_ids=IDS[1:], attention_mask=MASK[1:]).last_hidden_state[:, :6]
            single = model.get_encoder()(input_ids=alone, attention_mask=torch.ones_like(alone)).last_hidden_state
        else:
            padded = output(family, model, IDS[1:], MASK[1:])[:, :6]
            single = output(family, model, alone, torch.ones_like(alone))
    torch.testing.assert_close(padded, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_name", [T5, LLAMA, BERT, OPT])
@pytest.mark.parametrize("spec", ["prefix_tuning[tokens=4]", "unipelt[tokens=4]"])
def test_sdpa_and_eager_attention_agree(spec, model_name):
    """With and without padding: without, sdpa gets no mask and would align `is_causal` to the prefix."""
    family, sdpa = build(spec, model_name, attention="sdpa")
    _, eager = build(spec, model_name, attention="eager")
    for mask in (MASK, torch.ones_like(MASK)):
        with torch.no_grad():
            a, b = output(family, sdpa, mask=mask), output(family, eager, mask=mask)
        rows = mask.bool() if family == "encoder" else slice(None)  # an encoder's padded positions are no output
        torch.testing.assert_close(a[rows], b[rows], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_name", [T5, LLAMA, BERT])
@pytest.mark.parametrize("spec", LIVE)
def test_every_added_tensor_is_live_in_eval_mode(spec, model_name):
    family, model = build(spec, model_name)
    assert_live(model, added(model, base_model(model_name)), lambda: output(family, model))


def test_a_copy_carries_no_forward_tensors_and_computes_the_same():
    family, model = build("prefix_tuning[tokens=4]", T5)
    model.train()
    output(family, model).sum()  # leaves the prefix states of this forward, with their graph
    twin = copy.deepcopy(model.eval())
    assert all(m.states is None for m in twin.modules() if isinstance(m, PrefixNetwork))
    with torch.no_grad():
        torch.testing.assert_close(output(family, twin), output(family, model), atol=0, rtol=0)


@pytest.mark.parametrize("spec,model_name,message", [
    ("prefix_tuning[sites=cross]", LLAMA, "has no 'cross' attention; its sites are decoder"),
    ("prefix_tuning[sites=decoder]", BERT, "its sites are encoder"),
    ("prefix_tuning[sites=enc]", T5, "unknown site 'enc'"),
    ("prefix_tuning[tokens=0]", T5, "bad value for 'tokens'"),
])
def test_bad_options_are_user_errors(spec, model_name, message):
    with pytest.raises(UserError, match=message):
        build(spec, model_name)


def test_an_attention_implementation_without_prefix_support_is_a_user_error():
    """Before training when the model comes so, and at the forward pass when it is switched later."""
    with pytest.raises(UserError, match="sdpa or eager attention implementation, not 'flex_attention'"):
        build("prefix_tuning[tokens=4]", BERT, attention="flex_attention")
    family, model = build("prefix_tuning[tokens=4]", BERT)
    model.config._attn_implementation_internal = "flex_attention"
    with pytest.raises(UserError, match="sdpa or eager attention implementation"):
        output(family, model)
