"""`gradient_checkpointing: true`: the run's spec records it (and leaves other runs' ids as they were), it trains
to the same losses and gradients, and autograd keeps fewer bytes for the backward pass. Peak memory itself is
measured in benchmarks/checkpointing.py, not here."""

import pytest
import torch
from conftest import run_json, write_suite

from peftbench.config import Suite
from peftbench.evaluate import batch_loss
from peftbench.memory import MemorySettings, plan_memory
from peftbench.execution import build_task_model
from peftbench.planning import plan
from peftbench.runspec import single_run
from peftbench.tasks import get_task

def _suite(**fields) -> Suite:
    return Suite(name="ckpt", models=["config:tiny-t5"], tasks=["bbc_topic"], methods=["lora"], scales=[8],
                 max_input_length=16, val_cap=8, test_cap=8, **fields)


def test_the_key_is_in_the_spec_only_when_on_so_stored_ids_stay():
    off, on = plan(_suite(), load_data=False), plan(_suite(gradient_checkpointing=True), load_data=False)
    trained_off = [run for run in off.runs if run.kind == "train"]
    trained_on = [run for run in on.runs if run.kind == "train"]
    assert all("gradient_checkpointing" not in run.spec for run in trained_off)
    assert all(run.spec["gradient_checkpointing"] is True for run in trained_on)
    assert {r.run_id for r in trained_on}.isdisjoint(r.run_id for r in trained_off)
    assert [r.run_id for r in off.runs if r.kind == "baseline"] == [r.run_id for r in on.runs if r.kind == "baseline"]


def _loss_grads_and_saved_bytes(model_name: str, method: str, checkpointing: bool):
    task = get_task("bbc_topic")
    spec = single_run(model_name, method, n_train=4, batch_size=4, max_input_length=16, max_target_length=4,
                      gradient_checkpointing=checkpointing)
    task_model = build_task_model(spec, task)
    rows = [{"headline": f"Markets rise {i}", "opening": "Traders bought shares again today.", "topic": "business"}
            for i in range(4)]
    from peftbench.data import collate

    batch = collate([task_model.encoder.encode(row) for row in rows], task_model.pad_id)
    task_model.model.train()
    saved = [0]

    def pack(tensor):
        saved[0] += tensor.untyped_storage().nbytes()
        return tensor

    torch.manual_seed(1)  # the same dropout masks in both runs: checkpointing replays the RNG state
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = batch_loss(task_model, batch)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in task_model.model.named_parameters() if p.requires_grad}
    return float(loss), grads, saved[0], task_model


@pytest.mark.parametrize("model", ["config:tiny-t5", "config:tiny-llama", "config:tiny-bert"])
@pytest.mark.parametrize("method", ["full", "lora", "prefix_tuning[tokens=4,hidden=8]", "houlsby"])
def test_same_loss_and_gradients_with_fewer_saved_bytes(model, method):
    if model == "config:tiny-bert" and method.startswith("prefix"):
        pytest.skip("prefix tuning is text-to-text only")
    loss, grads, saved, _ = _loss_grads_and_saved_bytes(model, method, False)
    loss_ckpt, grads_ckpt, saved_ckpt, task_model = _loss_grads_and_saved_bytes(model, method, True)
    backbone = task_model.model.backbone if task_model.uses_head else task_model.model
    assert any(getattr(m, "gradient_checkpointing", False) for m in backbone.modules())
    assert loss_ckpt == pytest.approx(loss, rel=1e-6)
    assert grads_ckpt.keys() == grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    assert any(float(g.abs().sum()) > 0 for g in grads_ckpt.values())
    # Outside the checkpoints autograd keeps only what lies between the layers; the plan agrees on the order.
    assert saved_ckpt < saved
    planned = plan_memory(MemorySettings(model=model, method=method, batch_size=4, seq_len=16,
                                         gradient_checkpointing=True))
    assert planned.activations == planned.activations_checkpointed < planned.activations_full


def test_a_checkpointed_run_trains_to_the_same_curve_and_records_the_key(tmp_path):
    def run(name: str, **fields) -> dict:
        suite = write_suite(tmp_path / f"{name}.json", models=["config:tiny-t5"], methods=["lora"], scales=[16],
                            epochs=2, max_input_length=32, max_target_length=6, baselines=[], **fields)
        rows = run_json("run", suite, "--store", tmp_path / f"{name}.db", "--json")["runs"]
        assert len(rows) == 1 and rows[0]["status"] == "finished"
        return rows[0]

    plain, checkpointed = run("plain"), run("checkpointed", gradient_checkpointing=True)
    assert checkpointed["gradient_checkpointing"] is True and "gradient_checkpointing" not in plain
    for a, b in zip(plain["curve"], checkpointed["curve"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
