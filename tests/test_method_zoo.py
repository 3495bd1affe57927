"""Generic checks written once and run for every registered method on every architecture family it
applies to, so a method added later is covered without a line here: every tensor the method adds acts on
the output in eval mode and one backward pass reaches every tensor it trains (liveness: a hook that stops
firing, a gate that never opens, a prefix that never reaches attention fails here), the base stays
bit-identical in training, identity at initialisation, merge equals unmerged, and an adapter checkpoint
reloads to the same outputs."""

import pytest
import torch

from conftest import FLOAT32_RTOL, SAME_FUNCTION_RTOL, assert_same_function
from peftbench.architectures import linear_roles
from peftbench.config import MethodSpec
from peftbench.methods import METHODS
from peftbench.methods.base import Context, keep_model
from peftbench.models import load_model
from scaffold import (ARCHITECTURES, TEST_SPECS, assert_checkpoint_reloads, build, output, pretrained_biases,
                      projection_loss, scramble, train_steps)

pytestmark = pytest.mark.usefixtures("one_thread")

# Options that take another code path than a method's defaults: the liveness checks run them too.
VARIANTS = ["krona[b_rank=2,init=lokr]", "pfeiffer[placement=before_residual,nonlinearity=gelu]",
            "compacter_pp[placement=before_residual]", "ia3[layout=tfew]", "lora_scaling[s=2,targets=all-linear]",
            "mam[tokens=4,hidden=0,nonlinearity=gelu]"]


def _cases(models=ARCHITECTURES[:3], variants: tuple[str, ...] = ()):
    specs = [TEST_SPECS.get(name, name) for name in METHODS] + list(variants)
    for spec in specs:
        for model in models:
            if _method(spec).text_to_text_only and model == "config:tiny-bert":
                continue
            yield pytest.param(spec, model, id=f"{spec}-{model.removeprefix('config:')}")


def _method(spec: str):
    return METHODS.get(MethodSpec.parse(spec).name)


def _changes(after: torch.Tensor, before: torch.Tensor) -> bool:
    # In float64: far above rounding (~1e-15 relative, what a tensor cancelled by the maths leaves), far below
    # the weakest live tensor here (AdaLoRA's rank count on a BERT query, ~5e-9 relative).
    return (after - before).abs().max().item() > 1e-11 * before.abs().max().item()


def _inert_by_design(model) -> set[str]:
    """Biases of attention keys: softmax is invariant to them (q.(k + b) shifts every score of a query by the
    same q.b), so BitFit's and full tuning's key biases cannot change any output."""
    return {f"{role.name}.bias" for role in linear_roles(model) if role.projection == "k"}


@pytest.mark.parametrize("spec,model_name", list(_cases(ARCHITECTURES, tuple(VARIANTS))))
def test_every_method_tensor_acts_on_the_output_in_eval_mode(spec, model_name):
    """Perturbing any one tensor the method added (or trains) changes the eval-mode output, so no dropout
    can stand in for it; the tensors are first moved off their initial values (see scramble), and the base
    biases off zero (see pretrained_biases)."""
    built = build(spec, model_name)
    pretrained_biases(built)
    model = built.model.double().eval()
    tensors = built.method_tensors()
    assert tensors, f"{spec} adds or trains nothing"
    scramble(tensors)
    inert = _inert_by_design(model)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        reference = output(built.family, model)
        assert torch.equal(output(built.family, model), reference), "eval-mode outputs must be deterministic"
        dead = []
        for tensor_name, tensor in tensors.items():
            saved = tensor.detach().clone()
            tensor.add_(0.1 * torch.randn(tensor.shape, generator=generator).to(tensor.dtype))
            if not _changes(output(built.family, model), reference) and not tensor_name.endswith(tuple(inert)):
                dead.append(tensor_name)
            tensor.copy_(saved)
    assert dead == [], f"perturbing these {spec} tensors leaves the output unchanged"


@pytest.mark.parametrize("spec,model_name", list(_cases(ARCHITECTURES, tuple(VARIANTS))))
def test_one_backward_in_eval_mode_gives_every_trained_tensor_a_gradient(spec, model_name):
    """Nonzero gradients on exactly the method's parameters, with dropout off; frozen ones get none."""
    built = build(spec, model_name)
    pretrained_biases(built)
    trainable = built.trainable()
    scramble(built.method_tensors())
    projection_loss(built.family, built.model.eval()).backward()
    owns = _method(spec).owns
    assert [n for n in trainable if not owns(n)] == [], f"trained but not {spec}'s"
    inert = tuple(_inert_by_design(built.model))  # their gradient is zero up to rounding
    assert [n for n, p in trainable.items() if (p.grad is None or not p.grad.any()) and not n.endswith(inert)] == []
    assert [n for n, p in built.model.named_parameters() if not p.requires_grad and p.grad is not None] == []


@pytest.mark.parametrize("spec,model_name", list(_cases()))
def test_base_weights_bit_identical_after_training(spec, model_name):
    built = build(spec, model_name)
    model = built.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(built.family, model)
    after = dict(model.named_parameters())
    assert [n for n, p in after.items() if not p.requires_grad and not torch.equal(p, before[n])] == []
    assert any(not torch.equal(p, before[n]) for n, p in after.items() if p.requires_grad)


@pytest.mark.parametrize("spec,model_name", [c for c in _cases() if _method(c.values[0]).identity_init])
def test_identity_at_initialisation(spec, model_name):
    base = load_model(model_name).model.eval().double()
    built = build(spec, model_name, dtype=torch.float64)
    with torch.no_grad():
        assert_same_function(output(built.family, built.model.eval()), output(built.family, base),
                             FLOAT32_RTOL if _method(spec).float32_adapter else SAME_FUNCTION_RTOL)


def _folds(spec: str) -> bool:
    """Methods whose merge folds added tensors into the base weights; full tuning and BitFit train the base
    weights in place, so their merge is `keep_model` and there is nothing to compare (test_speedups checks
    that evaluation then uses the trained model itself)."""
    method = _method(spec)
    return method.mergeable and method.merge is not keep_model


@pytest.mark.parametrize("spec,model_name", [c for c in _cases() if _folds(c.values[0])])
def test_merge_matches_unmerged(spec, model_name):
    """The merged model is a plain model of the base's parameters (no wrapper left, nothing added) that
    computes the trained model's function: a merge that returned the adapted model would fail the first."""
    built = build(spec, model_name)
    model = built.model
    train_steps(built.family, model)
    base_count = sum(p.numel() for p in load_model(model_name).model.parameters())
    model.double()  # in float32 a rare logit differs by ~1.1e-5 with one thread: summation order, not the merge
    with torch.no_grad():
        unmerged = output(built.family, model)
        merged_model = _method(spec).merge(model)
        merged = output(built.family, merged_model)
        base = output(built.family, load_model(model_name).model.double().eval())
    assert not any(hasattr(module, "base_layer") for module in merged_model.modules())
    assert sum(p.numel() for p in merged_model.parameters()) == base_count
    assert_same_function(merged, unmerged, FLOAT32_RTOL if _method(spec).float32_adapter else SAME_FUNCTION_RTOL)
    assert not torch.allclose(merged, base)  # training moved the function: the equality above is not the base's


@pytest.mark.parametrize("spec,model_name", list(_cases()))
def test_adapter_checkpoint_reloads_exactly(spec, model_name):
    assert_checkpoint_reloads(spec, model_name)


def test_p_tuning_joins_embeddings_narrower_than_the_hidden_size():
    """OPT-350m embeds tokens in 512 dimensions and projects them to its hidden 1,024: P-tuning's prompts must
    be 512 wide (the memory plan found hamilton2023's P-tuning runs on OPT-350m failing)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("opt", vocab_size=64, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                  num_attention_heads=4, word_embed_proj_dim=16, max_position_embeddings=64)
    model = AutoModelForCausalLM.from_config(config)
    method = METHODS.get("p_tuning")
    adapted = method.apply(model, method.parse_options(MethodSpec.parse("p_tuning[tokens=3,encoder_hidden=8]")),
                           Context(family="decoder", seed=0))
    ids = torch.ones(2, 5, dtype=torch.long)
    loss = adapted(input_ids=ids, attention_mask=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None for p in adapted.parameters() if p.requires_grad)
