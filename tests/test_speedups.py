"""The speed switches do not change results beyond tolerance: length grouping changes only the padding of a
batch (same contents → same loss curve within 1e-3), and evaluation on merged weights gives the same
predictions as on the unmerged model, which it leaves exactly as trained."""

import dataclasses
from collections import Counter

import pytest
import torch
from torch import nn

from conftest import FLOAT32_RTOL, SAME_FUNCTION_RTOL, TINY_MODELS, assert_same_function
from peftbench import train as train_module
from peftbench.config import MethodSpec
from peftbench.data import batch_order, collate, make_splits
from peftbench.evaluate import evaluate, generate
from peftbench.methods import METHODS
from peftbench.methods.base import Context, keep_model, merged_copy
from peftbench.models import load_model
from peftbench.execution import build_task_model, merged_for_eval
from peftbench.tasks import get_task
from peftbench.runspec import flat_schedule, single_run
from peftbench.train import train
from scaffold import TEST_SPECS

SETTINGS = flat_schedule(lr=3e-3, epochs=3, batch_size=4)


def _prepared(model: str, method: str, n_train: int = 24, max_input_length: int = 48):
    task = get_task("bbc_topic")
    spec = single_run(model, method, n_train=n_train, batch_size=SETTINGS.batch_size, epochs=SETTINGS.epochs,
                      max_input_length=max_input_length, max_target_length=8, group_by_length=True)
    task_model = build_task_model(spec, task)
    for module in task_model.model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0  # dropout draws depend on tensor shapes, so padding would change them
    splits = make_splits(task, task.load(), split_seed=0, val_cap=8, test_cap=12)
    encode = task_model.encoder.encode
    return task_model, [encode(r) for r in splits.train[:n_train]], [encode(r) for r in splits.val], splits.test


def test_grouped_and_plain_orders_cover_every_example_once_per_epoch():
    lengths = [(7 * i) % 23 + 1 for i in range(50)]
    for grouped in (True, False):
        batches = batch_order(lengths, 4, seed=3, group_by_length=grouped)
        assert sorted(i for batch in batches for i in batch) == list(range(50))
    grouped = batch_order(lengths, 4, seed=3, group_by_length=True)
    plain = batch_order(lengths, 4, seed=3, group_by_length=False)
    padding = lambda batches: sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)  # noqa: E731
    assert padding(grouped) < padding(plain)


@pytest.mark.parametrize("model", TINY_MODELS)
def test_length_grouping_changes_only_padding(model, monkeypatch):
    """The grouped batches trained twice from the same start: padded to their own longest example (what
    grouping buys) and padded to the longest example of the whole set (what an ungrouped batch approaches).
    Same contents, same order: the loss curves must agree within 1e-3."""
    curves = []
    for wide in (False, True):
        task_model, train_examples, val_examples, _ = _prepared(model, "lora")
        longest = max(train_examples, key=lambda example: len(example["input_ids"]))

        def wide_collate(features, pad_id, left_pad=False):
            batch = collate([*features, longest], pad_id, left_pad)
            return {key: value[:-1] for key, value in batch.items()}

        if wide:
            monkeypatch.setattr(train_module, "collate", wide_collate)
        curves.append(train(task_model, train_examples, val_examples, SETTINGS, seed=0).curve)
        monkeypatch.undo()
    for tight, padded in zip(*curves, strict=True):
        assert abs(tight["train_loss"] - padded["train_loss"]) < 1e-3
        assert abs(tight["val_loss"] - padded["val_loss"]) < 1e-3
    assert curves[0][-1]["train_loss"] < curves[0][0]["train_loss"]  # it trained


def _mergeable_cases():
    """Methods whose merge folds added tensors into a copy of the base weights. Full tuning and BitFit train
    the base in place (merge is keep_model): evaluation uses the trained model itself, tested below."""
    for name, method in METHODS.items():
        if method.mergeable and method.merge is not keep_model:
            for model in TINY_MODELS:
                yield pytest.param(name, model, id=f"{name}-{model.removeprefix('config:')}")


@pytest.mark.parametrize("name,model_name", list(_mergeable_cases()))
def test_merged_copy_matches_and_leaves_the_model_untouched(name, model_name):
    loaded = load_model(model_name)
    loaded.model.double()  # merged and unmerged are one function: compared in float64 (see assert_same_function)
    method = METHODS.get(name)
    torch.manual_seed(0)
    model = method.apply(loaded.model, method.parse_options(MethodSpec.parse(TEST_SPECS.get(name, name))),
                         Context(family=loaded.family, seed=0))
    trainable = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():  # move the method away from its identity start, so merging has something to fold
        for parameter in trainable:
            parameter.add_(torch.randn_like(parameter) * 0.05)
    model.eval()
    inputs = {"input_ids": torch.randint(1000, 2000, (2, 10), generator=torch.Generator().manual_seed(0))}
    if loaded.family == "seq2seq":
        inputs["decoder_input_ids"] = inputs["input_ids"][:, :4]
    output = lambda m: (m(**inputs).last_hidden_state if loaded.family == "encoder" else m(**inputs).logits)  # noqa: E731
    before = {key: value.clone() for key, value in model.state_dict().items()}
    with torch.no_grad():
        unmerged = output(model)
        copy = merged_copy(model, method.merge)
        merged = output(copy)
        again = output(model)
    wrapped = lambda m: [name for name, module in m.named_modules() if hasattr(module, "base_layer")]  # noqa: E731
    assert wrapped(copy) == [] and wrapped(model) != []  # the copy is folded; the trained model keeps its method
    assert_same_function(merged, unmerged, FLOAT32_RTOL if method.float32_adapter else SAME_FUNCTION_RTOL)
    assert torch.equal(again, unmerged)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("model,method", [("config:tiny-bert", "lora"), ("config:tiny-t5", "ia3"),
                                          ("config:tiny-llama", "lora")])
def test_merged_evaluation_gives_the_same_predictions(model, method):
    task_model, train_examples, val_examples, test_rows = _prepared(model, method)
    train(task_model, train_examples, val_examples, dataclasses.replace(SETTINGS, epochs=1), seed=0)
    merged = merged_for_eval(task_model, method)
    assert merged is not task_model and merged.model is not task_model.model
    metrics, _ = evaluate(task_model, test_rows, 4, "generate", 8)
    merged_metrics, _ = evaluate(merged, test_rows, 4, "generate", 8)
    assert merged_metrics == metrics
    if not task_model.uses_head:
        assert generate(merged, test_rows, 4, 8)[0] == generate(task_model, test_rows, 4, 8)[0]


def test_methods_trained_in_place_are_evaluated_as_they_are():
    task_model, *_ = _prepared("config:tiny-bert", "full")
    assert merged_for_eval(task_model, "full") is task_model
    bitfit_model, *_ = _prepared("config:tiny-t5", "bitfit[add_bias=true]")
    assert merged_for_eval(bitfit_model, "bitfit") is bitfit_model
    prompt_model, *_ = _prepared("config:tiny-bert", "prompt_tuning[tokens=4]")
    assert merged_for_eval(prompt_model, "prompt_tuning") is prompt_model  # not mergeable


def test_speed_switches_reach_the_run_spec():
    from peftbench.config import Suite
    from peftbench.planning import Overrides, plan

    suite = Suite(name="switches", models=["config:tiny-bert"], tasks=["bbc_topic"], methods=["lora"], scales=[16],
                  baselines=[], group_by_length=False, merge_for_eval=False, bf16_autocast=False, fused_adamw=False)
    (run,) = plan(suite, Overrides()).runs
    assert {key: run.spec[key] for key in ("group_by_length", "merge_for_eval", "bf16_autocast", "fused_adamw")} \
        == dict.fromkeys(("group_by_length", "merge_for_eval", "bf16_autocast", "fused_adamw"), False)
    defaults = plan(suite.model_copy(update={"group_by_length": True, "merge_for_eval": True, "bf16_autocast": True,
                                             "fused_adamw": True}), Overrides()).runs[0].spec
    assert defaults["merge_for_eval"] and defaults["fused_adamw"] and run.run_id != plan(
        suite.model_copy(update={"merge_for_eval": True}), Overrides()).runs[0].run_id


def test_one_validation_pass_gives_the_loss_and_the_score_of_two():
    """A classification head's validation reads the loss and the predictions off the same logits: one forward
    pass per loss batch, and the same loss and metrics as the loss pass plus an evaluation pass."""
    from peftbench.evaluate import EVAL_BATCH_FACTOR, Scoring, mean_loss, validation

    task_model, _, val_examples, _ = _prepared("config:tiny-bert", "lora", max_input_length=256)
    with torch.no_grad():  # a head that tells the examples apart, so a prediction put on the wrong row shows
        task_model.model.head.weight.normal_(0, 30.0, generator=torch.Generator().manual_seed(0))
    task = task_model.encoder.task
    val_rows = make_splits(task, task.load(), split_seed=0, val_cap=8, test_cap=12).val
    batch_size = 4
    loss, metrics = mean_loss(task_model, val_examples, batch_size), \
        evaluate(task_model, val_rows, batch_size * EVAL_BATCH_FACTOR, "generate", 8)[0]
    assert len(set(metrics["per_example"])) == 2 and len(set(metrics["prediction_counts"].values())) > 2
    assert len({len(example["input_ids"]) for example in val_examples}) > 1  # batched out of order, longest first
    passes = []
    hook = task_model.model.register_forward_hook(lambda *_: passes.append(1))
    one_loss, one_metrics = validation(task_model, val_examples, batch_size, Scoring(val_rows, "generate", 8))
    hook.remove()
    assert len(passes) == len(batch_order([len(e["input_ids"]) for e in val_examples], batch_size, seed=None))
    assert one_loss == loss and one_metrics == metrics


def test_batched_generation_that_stops_at_each_rows_end_gives_each_rows_own_output(monkeypatch):
    """Generation stops a batch when every row has ended: a row that ends early is padded from its end on, and a
    row still going gets the text it gets alone. So the batched texts equal the texts of each row generated by
    itself, for rows that ended early and rows that ran to the limit alike (float64: padding changes nothing)."""
    from peftbench.data import Encoder

    task_model, *_ = _prepared("config:tiny-llama", "lora", max_input_length=256)  # prompts of many lengths
    task_model.model.double()
    task = task_model.encoder.task
    rows = make_splits(task, task.load(), split_seed=0, val_cap=8, test_cap=12).test[:8]
    limit = 6
    free, _ = generate(task_model, rows, 8, limit)
    ids = [task_model.encoder.tokenizer(text, add_special_tokens=False)["input_ids"] for text in free]
    end = Counter(token for row in ids for token in row[1:3]).most_common(1)[0][0]  # a token some rows emit early
    monkeypatch.setattr(Encoder, "eos_id", property(lambda self: end))
    batched, _ = generate(task_model, rows, 8, limit)
    alone = [generate(task_model, [row], 1, limit)[0][0] for row in rows]
    assert batched == alone
    assert len({len(task_model.encoder.prompt_ids(row)) for row in rows}) > 1  # the batch was padded
    lengths = [len(task_model.encoder.tokenizer(text, add_special_tokens=False)["input_ids"]) for text in batched]
    assert min(lengths) < limit - 1 and max(lengths) >= limit - 1  # some rows ended early, some ran on
