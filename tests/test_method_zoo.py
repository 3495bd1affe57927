"""Generic checks written once and run for every registered method on every architecture family it
applies to: gradients reach exactly the method's parameters, the base stays bit-identical, identity at
initialisation, merge equals unmerged, and an adapter checkpoint reloads to the same outputs."""

import io

import pytest
import torch

from conftest import TINY_MODELS, assert_same_function
from peftbench.accounting import adapter_state
from peftbench.config import MethodSpec
from peftbench.methods import METHODS
from peftbench.methods.base import Context
from peftbench.models import load_model

# Small settings where a method's defaults are too big for the tiny models, or it needs an option there.
TEST_SPECS = {"prompt_tuning": "prompt_tuning[tokens=4]", "prefix_tuning": "prefix_tuning[tokens=4]",
              "p_tuning": "p_tuning[tokens=4]", "bitfit": "bitfit[add_bias=true]", "mam": "mam[tokens=4]",
              "unipelt": "unipelt[tokens=4]"}


def _cases():
    for name, method in METHODS.items():
        for model in TINY_MODELS:
            if method.text_to_text_only and model == "config:tiny-bert":
                continue
            yield pytest.param(name, model, id=f"{name}-{model.removeprefix('config:')}")


def _build(name: str, model_name: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    loaded = load_model(model_name)
    loaded.model.to(dtype)
    base_ids = {id(p) for p in loaded.model.parameters()}
    method = METHODS.get(name)
    spec = MethodSpec.parse(TEST_SPECS.get(name, name))
    torch.manual_seed(seed)
    model = method.apply(loaded.model, method.parse_options(spec), Context(family=loaded.family, seed=0))
    return loaded.family, model, base_ids


INPUT_IDS = torch.randint(1000, 2000, (2, 10), generator=torch.Generator().manual_seed(0))
LABELS = torch.randint(1000, 2000, (2, 4), generator=torch.Generator().manual_seed(1))


def _output(family: str, model) -> torch.Tensor:
    mask = torch.ones_like(INPUT_IDS)
    if family == "encoder":
        return model(input_ids=INPUT_IDS, attention_mask=mask).last_hidden_state[:, -INPUT_IDS.shape[1]:]
    if family == "seq2seq":
        return model(input_ids=INPUT_IDS, attention_mask=mask, labels=LABELS).logits
    return model(input_ids=INPUT_IDS, attention_mask=mask).logits[:, -INPUT_IDS.shape[1]:]


def _train_steps(family: str, model, steps: int = 3) -> None:
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    for _ in range(steps):
        _output(family, model).float().pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.mark.parametrize("name,model_name", list(_cases()))
def test_gradients_reach_exactly_the_method_parameters(name, model_name):
    family, model, _ = _build(name, model_name)
    model.train()
    _output(family, model).float().pow(2).mean().backward()
    owns = METHODS.get(name).owns
    for parameter_name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert owns(parameter_name), f"{parameter_name} trains but is not {name}'s"
            assert parameter.grad is not None, f"no gradient reaches {parameter_name}"
        else:
            assert parameter.grad is None


@pytest.mark.parametrize("name,model_name", list(_cases()))
def test_base_weights_bit_identical_after_training(name, model_name):
    family, model, _ = _build(name, model_name)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train_steps(family, model)
    after = dict(model.named_parameters())
    assert [n for n, p in after.items() if not p.requires_grad and not torch.equal(p, before[n])] == []
    assert any(not torch.equal(p, before[n]) for n, p in after.items() if p.requires_grad)


@pytest.mark.parametrize("name,model_name", [c for c in _cases() if METHODS.get(c.values[0]).identity_init])
def test_identity_at_initialisation(name, model_name):
    base = load_model(model_name)
    family, model, _ = _build(name, model_name, dtype=torch.float64)
    base.model.eval().double()
    model.eval()
    with torch.no_grad():
        assert_same_function(_output(family, model), _output(family, base.model))


@pytest.mark.parametrize("name,model_name", [c for c in _cases() if METHODS.get(c.values[0]).mergeable])
def test_merge_matches_unmerged(name, model_name):
    family, model, _ = _build(name, model_name)
    _train_steps(family, model)
    model.double()  # in float32 a rare logit differs by ~1.1e-5 with one thread: summation order, not the merge
    with torch.no_grad():
        unmerged = _output(family, model)
        merged = _output(family, METHODS.get(name).merge(model))
    assert_same_function(merged, unmerged)


@pytest.mark.parametrize("name,model_name", list(_cases()))
def test_adapter_checkpoint_reloads_exactly(name, model_name):
    family, model, base_ids = _build(name, model_name)
    _train_steps(family, model)
    buffer = io.BytesIO()
    torch.save({k: v.detach() for k, v in adapter_state(model, base_ids).items()}, buffer)
    buffer.seek(0)
    _, fresh, _ = _build(name, model_name, seed=123)  # other init: only the checkpoint can make it equal
    missing = set(adapter_state(fresh, {id(p) for p in []})) - set(dict(fresh.named_parameters()))
    assert not missing
    fresh.load_state_dict(torch.load(buffer), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(_output(family, fresh.eval()), _output(family, model.eval()), atol=0, rtol=0)
