"""LoRA variants (DoRA, AdaLoRA, T-Few's LoRA with scaling, KronA), (IA)3's T-Few layout and P-tuning (prefix
tuning: tests/test_prefix.py) on the three tiny architectures: exact trainable counts,
identity at initialisation, merge equal to unmerged after training, a frozen base, gradients everywhere
they should be, and the module names each selection picks."""

import pytest
import torch

from conftest import TINY_MODELS, assert_same_function, run_cli, run_json, write_suite
from peftbench.config import MethodSpec
from peftbench.errors import UserError
from peftbench.methods import METHODS
from peftbench.methods.base import Context
from peftbench.methods.adapted import AdaptedLinear, ScaledLoraLinear
from peftbench.methods.lora_variants import KronaLinear
from peftbench.models import load_model, meta_model
from scaffold import INPUT_IDS, MASK, build, output, task_loss, train_steps

T5, LLAMA, BERT = TINY_MODELS

# Exact trainable counts on the tiny configs: d=32, FFN 64, 2 layers; T5 has 2 encoder blocks (self-attention,
# FFN) and 2 decoder blocks (self-, cross-attention, FFN), all attention projections 32x32; Llama has 2 kv
# heads of 8, so k_proj and v_proj map 32->16; BERT's projections are 32x32. No classification head here.
EXPECTED_TRAINABLE = {
    # DoRA r=8 on q,v: LoRA's 8*(in+out) plus a magnitude per output row.
    ("dora", T5): 12 * (8 * (32 + 32) + 32),  # 12 q/v layers (2 enc x 2, 2 dec x 2 x 2) = 6,528
    ("dora", LLAMA): 2 * ((8 * (32 + 32) + 32) + (8 * (32 + 16) + 16)),  # q 544 + v 400, 2 layers = 1,888
    ("dora", BERT): 4 * (8 * (32 + 32) + 32),  # 2,176
    # AdaLoRA init_r=12 on q,v: P (12 x in), Q (out x 12) and the 12 singular values E.
    ("adalora", T5): 12 * (12 * (32 + 32) + 12),  # 12 x 780 = 9,360
    ("adalora", LLAMA): 2 * ((12 * 64 + 12) + (12 * 48 + 12)),  # q 780 + v 588, 2 layers = 2,736
    ("adalora", BERT): 4 * (12 * 64 + 12),  # 3,120
    # LoRA with scaling, defaults r=2, s=1 on q,k,v,o: additive 2*(in+out) plus scaling (in+out).
    ("lora_scaling", T5): 24 * (2 * 64 + 64),  # 24 projections (2 x 4 enc, 2 x 8 dec) x 192 = 4,608
    ("lora_scaling", LLAMA): 2 * (192 + 2 * (2 * 48 + 48) + 192),  # q, o 192; k, v 32->16: 144 = 1,344
    ("lora_scaling", BERT): 8 * 192,  # 1,536
    # s=2 and every linear layer: 2*(in+out) + 2*(in+out). T5's FFN: wi_0, wi_1 32->64, wo 64->32, 4 blocks.
    ("lora_scaling[s=2,targets=all-linear]", T5): 24 * 256 + 12 * 4 * 96,  # 6,144 + 4,608 = 10,752
    ("lora_scaling[s=2,targets=all-linear]", LLAMA): 2 * (256 + 192 + 192 + 256 + 3 * 4 * 96),  # 4,096
    ("lora_scaling[s=2,targets=all-linear]", BERT): 2 * (4 * 256 + 2 * 4 * 96),  # 3,584
    # Scaling vectors only, on T-Few's (IA)3 layout (k, v, un-gated FFN in-branch): in + out per layer.
    ("lora_scaling[train=scaling,targets=ia3]", T5): 2 * (2 * 64 + 96) + 2 * (4 * 64 + 96),  # 448 + 704 = 1,152
    ("lora_scaling[train=scaling,targets=ia3]", LLAMA): 2 * (2 * 48 + 96),  # 384
    ("lora_scaling[train=scaling,targets=ia3]", BERT): 2 * (2 * 64 + 96),  # 448
    # KronA, balanced factors on q,v: 32 = 4 x 8, so A is 4x4 and B 8x8 (80); Llama's v (16 x 32): A 4x4, B 4x8 (48).
    ("krona", T5): 12 * (16 + 64),  # 960
    ("krona", LLAMA): 2 * (80 + 48),  # 256
    ("krona", BERT): 4 * 80,  # 320
    ("krona[a_out=2,a_in=8,targets=all-linear]", BERT): 2 * (4 * (16 + 16 * 4) + (16 + 32 * 4) + (16 + 16 * 8)),
    # B factored at rank 2 (LoKr's w2 = w2_a w2_b, as 2 < max(B's dims) / 2): 8x8 -> 8x2 + 2x8 = 32, so 16 + 32
    # per 32x32 projection; Llama's v: A 4x4, B 4x8 -> 4x2 + 2x8 = 24. At rank 8 no B here is factored.
    ("krona[b_rank=2,init=lokr]", T5): 12 * (16 + 32),  # 576
    ("krona[b_rank=2,init=lokr]", LLAMA): 2 * ((16 + 32) + (16 + 24)),  # 176
    ("krona[b_rank=2]", BERT): 4 * (16 + 32),  # 192
    ("krona[b_rank=8,init=lokr]", BERT): 4 * 80,  # 320, as krona
    # (IA)3, T-Few layout: one scale per output of k, v and the un-gated FFN in-branch (64 outputs).
    ("ia3[layout=tfew]", T5): 2 * (32 + 32 + 64) + 2 * (4 * 32 + 64),  # encoder 256 + decoder 384 = 640
    ("ia3[layout=tfew]", LLAMA): 2 * (16 + 16 + 64),  # 192
    ("ia3[layout=tfew]", BERT): 2 * (32 + 32 + 64),  # 256
    # P-tuning, 4 tokens, MLP prompt encoder 32->16->16->32 with biases, one token set (also on T5).
    ("p_tuning[tokens=4,encoder_hidden=16]", T5): 4 * 32 + (32 * 16 + 16) + (16 * 16 + 16) + (16 * 32 + 32),
    ("p_tuning[tokens=4,encoder_hidden=16]", LLAMA): 1472,
    ("p_tuning[tokens=4,encoder_hidden=16]", BERT): 1472,
}
SPECS = sorted({spec for spec, _ in EXPECTED_TRAINABLE})
MERGEABLE_SPECS = [spec for spec in SPECS if METHODS.get(MethodSpec.parse(spec).name).mergeable]
IDENTITY_SPECS = [spec for spec in SPECS if METHODS.get(MethodSpec.parse(spec).name).identity_init]

def _build(spec_text: str, model_name: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    built = build(spec_text, model_name, seed, dtype)
    return built.family, built.model, built.context


def _train(family: str, model, steps: int = 3) -> None:
    train_steps(family, model, task_loss, steps)


def _cases(specs):
    return [pytest.param(spec, model, id=f"{spec}-{model.removeprefix('config:')}")
            for spec in specs for model in TINY_MODELS if (spec, model) in EXPECTED_TRAINABLE]


@pytest.mark.parametrize("spec,model_name", _cases(SPECS))
def test_exact_trainable_counts_and_ownership(spec, model_name):
    _, model, _ = _build(spec, model_name)
    owns = METHODS.get(MethodSpec.parse(spec).name).owns
    names = {name for name, _ in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name in names if owns(name)}, "owns() must be true exactly for the trained names"
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == EXPECTED_TRAINABLE[(spec, model_name)]


@pytest.mark.parametrize("spec,model_name", _cases(SPECS))
def test_gradients_reach_every_trainable_parameter_and_base_stays_frozen(spec, model_name):
    family, model, _ = _build(spec, model_name)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.eval()  # no dropout that could make an unused tensor look wired in (nonzero: test_method_zoo)
    task_loss(family, model).backward()
    for name, parameter in model.named_parameters():
        assert (parameter.grad is not None) == parameter.requires_grad, name
    model.zero_grad(set_to_none=True)
    _train(family, model)
    after = dict(model.named_parameters())
    assert [name for name, p in after.items() if not p.requires_grad and not torch.equal(p, before[name])] == []
    # Without weight decay a parameter moves only if gradients reached it. (At the first step a LoRA-style
    # factor facing a zero partner - lora_a, KronA's A, AdaLoRA's P and Q - gets an exact zero gradient.)
    assert [name for name, p in after.items() if p.requires_grad and torch.equal(p, before[name])] == []


@pytest.mark.parametrize("spec,model_name", _cases(IDENTITY_SPECS))
def test_identity_at_initialisation(spec, model_name):
    base = load_model(model_name).model.eval().double()
    family, model, _ = _build(spec, model_name, dtype=torch.float64)
    with torch.no_grad():
        adapted, reference = output(family, model.eval()), output(family, base)
    if "s=2" in spec:  # its s scaled copies of x W^T add up to the base output only up to rounding
        assert_same_function(adapted, reference)
    else:
        assert torch.equal(adapted, reference)


@pytest.mark.parametrize("spec,model_name", _cases(MERGEABLE_SPECS))
def test_merge_matches_unmerged_after_training(spec, model_name):
    family, model, _ = _build(spec, model_name)
    base_count = sum(p.numel() for p in load_model(model_name).model.parameters())
    _train(family, model)
    model.double()  # trained in float32 as in a run; compared in float64 (see assert_same_function)
    with torch.no_grad():
        unmerged = output(family, model)
        merged_model = METHODS.get(MethodSpec.parse(spec).name).merge(model)
        merged = output(family, merged_model)
    # A plain model again: no wrappers left and exactly the base's parameters.
    assert not any(isinstance(m, AdaptedLinear) or hasattr(m, "base_layer") for m in merged_model.modules())
    assert sum(p.numel() for p in merged_model.parameters()) == base_count
    assert_same_function(merged, unmerged)
    assert (merged - _output_of_base(family, model_name)).abs().max() > 1e-3  # training did change the function


def _output_of_base(family, model_name):
    with torch.no_grad():
        return output(family, load_model(model_name).model.eval())


def _ia3_layers(model) -> dict[str, tuple[int, ...]]:
    """Module name (as in the bare model) -> shape of its trained (IA)3 vector (PEFT's, or T-Few's output one)."""
    layers = {}
    for name, module in model.named_modules():
        if hasattr(module, "ia3_l"):
            layers[name.removeprefix("base_model.model.")] = tuple(module.ia3_l["default"].shape)
        elif isinstance(module, ScaledLoraLinear):
            assert not module.multi_lora_a.requires_grad  # T-Few allocates the input vector but does not train it
            layers[name] = tuple(module.multi_lora_b.shape)
    return layers


def test_ia3_tfew_layout_scales_outputs_of_k_v_and_the_ungated_ffn_branch():
    _, t5, _ = _build("ia3[layout=tfew]", T5)
    expected = {}
    for i in range(2):
        expected |= {f"encoder.block.{i}.layer.0.SelfAttention.k": (32, 1),
                     f"encoder.block.{i}.layer.0.SelfAttention.v": (32, 1),
                     f"encoder.block.{i}.layer.1.DenseReluDense.wi_1": (64, 1),
                     f"decoder.block.{i}.layer.0.SelfAttention.k": (32, 1),
                     f"decoder.block.{i}.layer.0.SelfAttention.v": (32, 1),
                     f"decoder.block.{i}.layer.1.EncDecAttention.k": (32, 1),
                     f"decoder.block.{i}.layer.1.EncDecAttention.v": (32, 1),
                     f"decoder.block.{i}.layer.2.DenseReluDense.wi_1": (64, 1)}
    assert _ia3_layers(t5) == expected  # (out, 1): output scaling, never wi_0 (the gated branch)

    _, llama, _ = _build("ia3[layout=tfew]", LLAMA)
    assert _ia3_layers(llama) == {name: shape for i in range(2) for name, shape in {
        f"model.layers.{i}.self_attn.k_proj": (16, 1), f"model.layers.{i}.self_attn.v_proj": (16, 1),
        f"model.layers.{i}.mlp.up_proj": (64, 1)}.items()}

    _, bert, _ = _build("ia3[layout=tfew]", BERT)
    assert _ia3_layers(bert) == {name: shape for i in range(2) for name, shape in {
        f"encoder.layer.{i}.attention.self.key": (32, 1), f"encoder.layer.{i}.attention.self.value": (32, 1),
        f"encoder.layer.{i}.intermediate.dense": (64, 1)}.items()}

    # The default stays Liu et al.'s PEFT layout: the FFN output projection's input is scaled.
    _, liu, _ = _build("ia3", T5)
    assert _ia3_layers(liu)["encoder.block.0.layer.1.DenseReluDense.wo"] == (1, 64)


@pytest.mark.parametrize("spec", ["ia3[layout=tfew]", "lora_scaling[train=scaling_out,targets=ia3]"])
@pytest.mark.parametrize("model_name,layer", [(BERT, "encoder.layer.0.attention.self.value"),
                                              ("config:tiny-opt", "model.decoder.layers.0.self_attn.v_proj")])
def test_tfew_output_scaling_multiplies_the_bias_too(spec, model_name, layer):
    """T-Few's LoRALinear (rank 0, scaling rank 1) computes F.linear(x, W, b) * l, as PEFT's IA3 does: the
    bias is scaled with the rest, (W x + b) * l, by hand here on a layer with a bias; merged, the same."""
    _, model, _ = _build(spec, model_name)
    module = model.get_submodule(layer)
    assert module.bias is not None and module.multi_lora_b.requires_grad
    with torch.no_grad():
        generator = torch.Generator().manual_seed(2)
        module.multi_lora_b.copy_(torch.randn(module.multi_lora_b.shape, generator=generator))
        module.bias.copy_(torch.randn(module.bias.shape, generator=generator))  # the tiny models' biases start at 0
        x = torch.randn(2, 5, module.in_features, generator=torch.Generator().manual_seed(3))
        by_hand = (x @ module.weight.T + module.bias) * module.multi_lora_b[:, 0]
        torch.testing.assert_close(module(x), by_hand, atol=1e-6, rtol=1e-6)
        merged = torch.nn.functional.linear(x, module.merged_weight(), module.merged_bias())
        torch.testing.assert_close(merged, by_hand, atol=1e-6, rtol=1e-6)


def test_ia3_tfew_layout_on_a_non_gated_t5_picks_wi():
    from peftbench.methods.tfew_ia3 import is_tfew_ia3_target

    model, family = meta_model("config:t5-large")  # feed_forward_proj="relu": one in-branch, `wi`
    ffn = [name for name in Context(family=family).select(model, METHODS.get("ia3").options(), is_tfew_ia3_target)
           if "DenseReluDense" in name]
    assert len(ffn) == 48 and all(name.endswith("DenseReluDense.wi") for name in ffn)


def test_lora_scaling_later_layers_select_exactly_the_later_attention_projections():
    _, model, context = _build("lora_scaling[layers=later]", T5)
    wrapped = sorted(name for name, m in model.named_modules() if isinstance(m, ScaledLoraLinear))
    attention = {"encoder.block.1.layer.0.SelfAttention", "decoder.block.1.layer.0.SelfAttention",
                 "decoder.block.1.layer.1.EncDecAttention"}
    assert wrapped == sorted(f"{prefix}.{p}" for prefix in attention for p in "qkvo")
    assert context.record["layers"] == {"encoder.block": [1], "decoder.block": [1]}

    _, llama, _ = _build("lora_scaling[layers=later,modules=attn_kv]", LLAMA)
    assert sorted(name for name, m in llama.named_modules() if isinstance(m, ScaledLoraLinear)) == [
        "model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.v_proj"]


def test_adalora_allocates_rank_during_training_and_records_what_it_keeps():
    """update_and_allocate runs through the method's optimizer-step hook: ranks fall from init_r toward target_r,
    and the hook records the parameters the allocation keeps (12 layers 32 -> 32: 65 per singular value)."""
    family, model, context = _build("adalora[init_r=6,target_r=2,total_step=8]", T5)
    assert context.record == {"trainable_at_init_rank": 12 * 6 * 65, "trainable_at_target_budget": 12 * 2 * 65}
    hook = METHODS.get("adalora").on_optimizer_step
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    for step in range(1, 9):
        output(family, model).float().pow(2).mean().backward()
        optimizer.step()
        hook(model, context, step)
        optimizer.zero_grad()
    # Pruned singular values are masked to zero: the kept budget ends at about target_r per layer, not init_r.
    kept = [int((m.lora_E["default"] != 0).sum()) for m in model.modules() if hasattr(m, "lora_E")]
    assert kept and sum(kept) <= 2 * len(kept) < 6 * len(kept)
    assert context.record["trainable_allocated"] == 65 * sum(kept) <= context.record["trainable_at_target_budget"]


def test_adalora_params_show_both_counts(tmp_path):
    """init_r 12 and target_r 8 on q, v: T5's 12 projections of 32 x 32; Llama's v maps 32 -> 16 (cost 49)."""
    rows = run_json("params", T5, "--method", "adalora", "--method", "lora", "--json")
    assert (rows[0]["trainable"], rows[0]["trainable_at_budget"]) == (12 * 12 * 65, 12 * 8 * 65)
    assert rows[0]["chosen"]["trainable_at_target_budget"] == 12 * 8 * 65
    assert rows[1]["trainable_at_budget"] is None
    (llama,) = run_json("params", LLAMA, "--method", "adalora", "--json")
    assert (llama["trainable"], llama["trainable_at_budget"]) == (2 * 12 * (65 + 49), 2 * 8 * (65 + 49))
    code, out, _ = run_cli("params", T5, "--method", "adalora")
    assert code == 0 and "9,360 (6,240 at budget)" in out


def test_adalora_run_row_holds_the_counts_at_start_budget_and_end(tmp_path):
    suite = write_suite(tmp_path / "adalora.json", methods=["adalora[init_r=4,target_r=2]"], scales=[16], epochs=2)
    runs = run_json("run", suite, "--store", tmp_path / "r.db", "--device", "cpu", "--json")["runs"]
    (row,) = [row for row in runs if row["kind"] == "train"]
    record = row["method_record"]
    # BERT's q, v: 4 projections of 32 x 32 (65 per singular value); the head (32 x 5 + 5) trains too.
    assert row["trainable_params"] - 165 == record["trainable_at_init_rank"] == 4 * 4 * 65
    # The run's optimizer steps are the schedule's length, so it ends on the target budget.
    assert record["trainable_allocated"] == record["trainable_at_target_budget"] == 4 * 2 * 65


def test_krona_with_b_rank_is_peft_lokr():
    """krona[b_rank=r,init=lokr] has LoKr's factor shapes and init (w1 = A zero, w2 = w2_a w2_b Kaiming), and
    with LoKr's weights copied in computes LoKr's function (scale = alpha / r)."""
    from peft import LoKrConfig, get_peft_model

    _, ours, _ = _build("krona[b_rank=2,init=lokr]", BERT)
    names = [name for name, module in ours.named_modules() if isinstance(module, KronaLinear)]
    lokr = get_peft_model(load_model(BERT).model, LoKrConfig(r=2, alpha=2, target_modules=names))
    for name in names:
        mine, theirs = ours.get_submodule(name), lokr.base_model.model.get_submodule(name)
        pairs = [(mine.krona_a, theirs.lokr_w1["default"]), (mine.krona_b_out, theirs.lokr_w2_a["default"]),
                 (mine.krona_b_in, theirs.lokr_w2_b["default"])]
        assert [a.shape for a, _ in pairs] == [b.shape for _, b in pairs]
        assert not mine.krona_a.any() and not theirs.lokr_w1["default"].any()
        with torch.no_grad():
            theirs.lokr_w1["default"].normal_()  # a nonzero update, the same in both
            for a, b in pairs:
                a.copy_(b)
    assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == sum(
        p.numel() for p in lokr.parameters() if p.requires_grad)
    with torch.no_grad():
        torch.testing.assert_close(output("encoder", ours.eval()), output("encoder", lokr.eval()))


def test_krona_keeps_b_whole_where_factoring_saves_nothing():
    _, model, _ = _build("krona[b_rank=4]", BERT)  # B is 8x8: rank 4 is not below 8 / 2
    layer = next(m for m in model.modules() if isinstance(m, KronaLinear))
    assert layer.krona_b.shape == (8, 8) and layer.krona_b_out is None


def test_prompt_methods_work_on_an_encoder_through_the_mean_pooling_head():
    for spec in ("prefix_tuning[tokens=4,hidden=16]", "p_tuning[tokens=4,encoder_hidden=16]"):
        assert not METHODS.get(MethodSpec.parse(spec).name).text_to_text_only
        _, model, _ = _build(spec, BERT)
        model.eval().double()
        with torch.no_grad():
            padded = model(input_ids=INPUT_IDS, attention_mask=MASK).last_hidden_state[1:, -10:-3]
            alone = model(input_ids=INPUT_IDS[1:, :7], attention_mask=MASK[1:, :7]).last_hidden_state[:, -7:]
        # The real tokens are the last input-length positions, and padding does not leak into them.
        assert_same_function(padded, alone)


@pytest.mark.parametrize("spec,message", [
    ("lora_scaling[train=ab+bias]", "bad value for 'train'"),
    ("lora_scaling[s=2,train=ab+scaling_out]", "needs both scaling factors"),
    ("lora_scaling[targets=q+z]", "unknown projection 'z'"),
    ("krona[a_out=5]", "must divide"),
    ("prefix_tuning[tokens=0]", "bad value for 'tokens'"),
    ("ia3[layout=ours]", "bad value for 'layout'"),
])
def test_bad_options_are_user_errors(spec, message):
    with pytest.raises(UserError, match=message):
        _build(spec, BERT)


def test_tfew_ia3_on_biased_layers_is_peft_ia3_scaling_outputs():
    """On BERT (every linear layer has a bias) T-Few's (IA)3 computes what PEFT's IA3 does when it scales the
    same layers' outputs (no feed-forward input scaling): with equal vectors and biases, equal outputs."""
    from peft import IA3Config, get_peft_model

    _, ours, _ = _build("ia3[layout=tfew]", BERT)
    names = [name for name, module in ours.named_modules() if isinstance(module, ScaledLoraLinear)]
    ia3 = get_peft_model(load_model(BERT).model, IA3Config(target_modules=names, feedforward_modules=[]))
    generator = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for name in names:
            mine, theirs = ours.get_submodule(name), ia3.base_model.model.get_submodule(name)
            scale, bias = torch.randn(mine.out_features, generator=generator), torch.randn(mine.out_features,
                                                                                           generator=generator)
            mine.multi_lora_b.copy_(scale[:, None]), theirs.ia3_l["default"].copy_(scale[:, None])
            mine.bias.copy_(bias), theirs.base_layer.bias.copy_(bias)
        torch.testing.assert_close(output("encoder", ours.eval()), output("encoder", ia3.eval()))
