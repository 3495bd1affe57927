"""Every method on every architecture family: exact trainable counts, only the method's parameters move,
frozen weights stay bit-identical, and training lowers the loss."""

import dataclasses

import pytest
import torch

from conftest import ALL_METHODS, TINY_MODELS
from peftbench.config import MethodSpec
from peftbench.data import make_splits
from peftbench.errors import UserError
from peftbench.evaluate import mean_loss
from peftbench.methods import METHODS
from peftbench.execution import build_task_model
from peftbench.tasks import get_task
from peftbench.runspec import flat_schedule, single_run
from peftbench.train import train

# Exact trainable counts on the tiny configs (d=32, ffn 64, 2 layers, bbc_topic's 5 labels on BERT).
# LoRA r=8 on a 32x32 projection adds 8*(32+32)=512; T5 has q,v in 2 encoder self-attentions and
# 2x2 decoder (self + cross) attentions = 12 -> 6,144. The BERT head is 32*5+5 = 165.
EXPECTED_TRAINABLE = {
    ("config:tiny-t5", "lora"): 6144,
    ("config:tiny-llama", "lora"): 2 * (8 * (32 + 32) + 8 * (32 + 16)),  # q 32->32, v 32->16 (2 kv heads)
    ("config:tiny-bert", "lora"): 4 * 512 + 165,
    ("config:tiny-t5", "prompt_tuning[tokens=4]"): 4 * 32,  # one prompt, on the encoder input
    ("config:tiny-bert", "prompt_tuning[tokens=4]"): 4 * 32 + 165,
    ("config:tiny-llama", "ia3"): 2 * (16 + 16 + 64),  # k, v outputs (2 kv heads x 8) and down_proj input
}


SETTINGS = flat_schedule(lr=3e-3, epochs=3, batch_size=4)


def _prepared(model: str, method: str):
    task = get_task("bbc_topic")
    spec = single_run(model, method, n_train=12, batch_size=SETTINGS.batch_size, epochs=SETTINGS.epochs,
                      max_input_length=32, max_target_length=8, group_by_length=True)
    task_model = build_task_model(spec, task)
    splits = make_splits(task, task.load(), split_seed=0, val_cap=8, test_cap=8)
    encode = task_model.encoder.encode
    return task_model, [encode(r) for r in splits.train[:12]], [encode(r) for r in splits.val]


@pytest.mark.parametrize("model", TINY_MODELS)
@pytest.mark.parametrize("method", ALL_METHODS)
def test_only_method_parameters_change(model, method):
    task_model, train_examples, val_examples = _prepared(model, method)
    name = MethodSpec.parse(method).name
    before = {n: p.detach().clone() for n, p in task_model.model.named_parameters()}
    trainable = {n for n, p in task_model.model.named_parameters() if p.requires_grad}
    assert trainable, "the method must train something"
    for parameter_name in trainable:
        assert METHODS.get(name).owns(parameter_name) or parameter_name.startswith("head."), parameter_name
    if (model, method) in EXPECTED_TRAINABLE:
        count = sum(p.numel() for p in task_model.model.parameters() if p.requires_grad)
        assert count == EXPECTED_TRAINABLE[(model, method)]

    loss_before = mean_loss(task_model, train_examples, batch_size=4)
    train(task_model, train_examples, val_examples, SETTINGS, seed=0)
    loss_after = mean_loss(task_model, train_examples, batch_size=4)

    after = dict(task_model.model.named_parameters())
    frozen_moved = [n for n in before if n not in trainable and not torch.equal(before[n], after[n])]
    assert frozen_moved == []
    assert any(not torch.equal(before[n], after[n]) for n in trainable)
    assert loss_after < loss_before


def test_bitfit_without_biases_names_the_fix():
    with pytest.raises(UserError, match=r"use bitfit\[add_bias=true\]"):
        _prepared("config:tiny-t5", "bitfit")


def test_unknown_method_option_gets_a_hint():
    with pytest.raises(UserError, match="has no option 'rank'"):
        METHODS.get("lora").parse_options(MethodSpec.parse("lora[rank=4]"))
    with pytest.raises(UserError, match="bad value for 'r'"):
        METHODS.get("lora").parse_options(MethodSpec.parse("lora[r=-1]"))


def test_early_stopping_restores_the_best_epoch(monkeypatch):
    """Validation losses 1.0, 0.5, 0.7, 0.9 with patience 2: stop after epoch 4, keep epoch 2's weights."""
    task_model, train_examples, val_examples = _prepared("config:tiny-bert", "lora")
    losses = iter([1.0, 0.5, 0.7, 0.9])
    snapshots = []

    def fake_val_loss(model, examples, batch_size, scoring):
        snapshots.append({n: p.detach().clone() for n, p in model.model.named_parameters() if p.requires_grad})
        return next(losses), None

    monkeypatch.setattr("peftbench.train.validation", fake_val_loss)
    result = train(task_model, train_examples, val_examples, dataclasses.replace(SETTINGS, epochs=6, patience=2), seed=0)
    assert (result.best_epoch, result.stopped_by, len(result.curve)) == (2, "early_stopping", 4)
    final = {n: p for n, p in task_model.model.named_parameters() if p.requires_grad}
    assert all(torch.equal(final[n], snapshots[1][n]) for n in final)
    assert not all(torch.equal(final[n], snapshots[3][n]) for n in final)


def test_lr_schedule_warms_up_then_anneals():
    from peftbench.train import lr_factor

    factors = [lr_factor(step, total=10, warmup=2, peak=10.0, final=1.0) for step in range(11)]
    assert factors[0] == 1.0 and factors[2] == 10.0 and factors[10] == pytest.approx(1.0)
    assert factors[1] == pytest.approx(5.5) and factors[6] == pytest.approx(5.5)
