"""`sharding: {strategy: fsdp, processes: N}`: one run trained over N processes with PyTorch FSDP2 (gloo on this
CPU-only machine) follows the unsharded loss curve, stores one row with its peak summed over the ranks, and is
planned, requested from Ray and refused like any run. Its speed and memory belong in benchmarks/, not here."""

import pytest
import torch
from conftest import run_cli, run_json, write_suite

from peftbench.artifacts import folder_of, load_tensors
from peftbench.data import IGNORE
from peftbench.errors import UserError
from peftbench.memory import MemorySettings, plan_memory
from peftbench.ranks import Ranks
from peftbench.sharding import resources

# Sharded and unsharded steps differ by float32 rounding only (the gradient is summed in another order): the
# curves agree to about 1e-6. In float32 (cpu_bf16 off): under bf16 autocast each rank's smaller matrix products
# round differently (1e-3). A step that misses a rank's gradient moves the curve by far more than the tolerance.
CURVE_RTOL = 1e-4


@pytest.fixture(scope="module")
def tiny_t5_without_dropout(tmp_path_factory):
    """config:tiny-t5 saved as a local checkpoint with dropout off: dropout masks are drawn per process, so with
    dropout on no sharded run could repeat the unsharded curve to rounding. Loaded by the real loader."""
    from peftbench.models import load_model

    folder = tmp_path_factory.mktemp("tiny-t5-no-dropout")
    loaded = load_model("config:tiny-t5")
    loaded.model.config.dropout_rate = 0.0
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return str(folder)


def _run(tmp_path, name: str, model: str, **fields) -> list[dict]:
    suite = write_suite(tmp_path / f"{name}.json", models=[model], methods=["full", "lora"], scales=[11], epochs=3,
                        batch_size=5, max_input_length=32, max_target_length=6, val_cap=6, test_cap=6, baselines=[],
                        learning_rates={"full": 3e-3, "lora": 3e-3}, cpu_bf16="off", **fields)
    return run_json("run", suite, "--store", tmp_path / f"{name}.db", "--json")["runs"]


def test_sharded_over_two_cpu_processes_follows_the_unsharded_curve_and_stores_one_row(tmp_path, tiny_t5_without_dropout):
    plain = {row["method"]: row for row in _run(tmp_path, "plain", tiny_t5_without_dropout)}
    sharded_rows = _run(tmp_path, "sharded", tiny_t5_without_dropout, sharding={"processes": 2})
    assert len(sharded_rows) == 2 and {row["status"] for row in sharded_rows} == {"finished"}
    stored = run_json("results", "--store", tmp_path / "sharded.db", "--json")
    assert sorted(row["method"] for row in stored) == ["full", "lora"]  # one row per run, no rank wrote its own
    for row in sharded_rows:
        reference = plain[row["method"]]
        assert row["sharding"] == {"strategy": "fsdp", "processes": 2} and "sharding" not in reference
        assert row["ranks"]["processes"] == 2 and row["ranks"]["backend"] == "gloo"
        assert row["peak_memory_bytes"] == sum(row["ranks"]["peak_memory_bytes"]) > 0
        # 11 examples in batches of 5, 5 and 1: the last batch leaves rank 1 without a row of its own.
        assert row["steps"] == reference["steps"] and row["steps"] % 3 == 0
        assert row["trainable_params"] == reference["trainable_params"]
        losses = [epoch["train_loss"] for epoch in reference["curve"]]
        assert losses[-1] < 0.9 * losses[0], "the curve must move for a comparison of curves to mean anything"
        for ours, theirs in zip(row["curve"], reference["curve"], strict=True):
            assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=CURVE_RTOL)
            assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=CURVE_RTOL)
        assert row["best_val_loss"] == pytest.approx(reference["best_val_loss"], rel=CURVE_RTOL)
    # What rank 0 handed back is what was trained: the LoRA run's saved tensors are the unsharded run's.
    lora = next(row for row in sharded_rows if row["method"] == "lora")
    ours = load_tensors(folder_of(lora, tmp_path / "sharded.db"))
    theirs = load_tensors(folder_of(plain["lora"], tmp_path / "plain.db"))
    assert ours.keys() == theirs.keys() and ours
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, rtol=CURVE_RTOL, atol=1e-5, msg=name)  # entries ~0.1-0.3


def test_each_rank_takes_its_rows_and_its_share_of_the_loss_terms():
    labels = torch.tensor([[5, 6, IGNORE], [7, IGNORE, IGNORE], [8, 9, 10]])
    batch = {"input_ids": torch.arange(9).view(3, 3), "attention_mask": torch.ones(3, 3), "labels": labels}
    parts = [Ranks(rank, 2, torch.device("cpu")).part(batch, "seq2seq") for rank in range(2)]
    assert [part["input_ids"].tolist() for part, _ in parts] == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8]]]
    assert [share for _, share in parts] == [3 / 6, 3 / 6]
    decoder = [Ranks(rank, 2, torch.device("cpu")).part(batch, "decoder")[1] for rank in range(2)]
    assert decoder == [1 / 3, 2 / 3]  # a decoder's loss drops each row's first label
    # More ranks than rows: the rank left over runs a row for the collectives and weighs it 0.
    spare, share = Ranks(3, 4, torch.device("cpu")).part(batch, "seq2seq")
    assert len(spare["input_ids"]) == 1 and share == 0.0


def test_the_key_is_typed_recorded_only_when_set_and_refused_where_it_cannot_work(tmp_path):
    suite = write_suite(tmp_path / "s.json", models=["config:tiny-t5"], sharding={"processes": 2})
    trains = [run for run in run_json("run", suite, "--dry-run", "--json", "--store", tmp_path / "r.db")["runs"]
              if run["kind"] == "train"]
    assert trains and all(run["sharding"] == {"strategy": "fsdp", "processes": 2} for run in trains)
    for fields, message in [({"sharding": {"processes": 2, "shards": 2}}, "unknown key 'sharding.shards'"),
                            ({"sharding": {"processes": 1}}, "greater than or equal to 2"),
                            ({"sharding": {"strategy": "deepspeed", "processes": 2}}, "sharding.strategy"),
                            ({"sharding": {"processes": 2}, "methods": ["adalora"]}, "cannot be trained sharded")]:
        bad = write_suite(tmp_path / "bad.json", models=["config:tiny-t5"], **fields)
        code, out, err = run_cli("run", bad, "--store", tmp_path / "bad.db")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "bad.db").exists()


def test_more_processes_than_gpus_is_refused_before_the_store_opens(tmp_path, monkeypatch):
    from peftbench.planning import plan
    from peftbench.suite_files import load_suite
    from peftbench.sharding import refuse_unplaceable

    grid = plan(load_suite(str(write_suite(tmp_path / "s.json", sharding={"processes": 4}))), load_data=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UserError, match="sharding.processes 4 needs 4 GPUs but 2 are visible"):
        refuse_unplaceable(grid, torch.device("cuda"))
    refuse_unplaceable(grid, torch.device("cpu"))  # CPU ranks share the cores


def test_a_ray_task_holds_a_gpu_or_cpu_per_process():
    sharded, plain = {"sharding": {"strategy": "fsdp", "processes": 4}}, {}
    assert resources(sharded, cpus=1, gpus=1) == {"num_cpus": 1, "num_gpus": 4}
    assert resources(sharded, cpus=1, gpus=0.5) == {"num_cpus": 1, "num_gpus": 4}
    assert resources(sharded, cpus=1, gpus=0) == {"num_cpus": 4, "num_gpus": 0}
    assert resources(plain, cpus=2, gpus=0.5) == {"num_cpus": 2, "num_gpus": 0.5}


def test_a_sharded_plan_is_one_gpus_share():
    whole = plan_memory(MemorySettings(model="config:t5-large", method="full", batch_size=8, seq_len=128))
    half = plan_memory(MemorySettings(model="config:t5-large", method="full", batch_size=8, seq_len=128, processes=2))
    per_four = plan_memory(MemorySettings(model="config:t5-large", method="full", batch_size=4, seq_len=128))
    assert half.activations == per_four.activations  # each GPU runs half the micro-batch
    states = whole.weights + whole.method_tensors + whole.gradients + whole.optimizer
    assert half.fixed == states / 2 + half.gathered and 0 < half.gathered < states / 20
    assert half.total < whole.total and half.parts()["fsdp_gathered"] == half.gathered
    assert whole.shards_needed(half.total * 1.05) == 2 < whole.shards_needed(half.total * 0.9)
