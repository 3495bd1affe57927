"""End to end through the CLI: a grid over the three architecture families, resume, file tasks."""

import json

import pytest
import torch

from conftest import ALL_METHODS, TINY_MODELS, run_cli, run_json, write_suite
from peftbench.measure import environment_lock

RESULT_KEYS = {"run_id", "suite", "model", "task", "method", "method_options", "scale", "n_train", "seed", "lr",
               "status", "primary_metric", "score", "metrics", "trainable_params", "total_params",
               "peak_memory_bytes", "train_tokens_per_s", "infer_tokens_per_s", "wall_s", "best_epoch",
               "seconds_to_best"}


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """3 architectures x 6 methods x 2 scales, trained once for the module's tests, then run again."""
    folder = tmp_path_factory.mktemp("grid")
    suite = write_suite(folder / "grid.json", models=TINY_MODELS, methods=ALL_METHODS, scales=[8, 16], epochs=2)
    store = folder / "results.db"
    first = run_json("run", suite, "--store", store, "--json")
    again = run_json("run", suite, "--store", store, "--json")
    rows = run_json("results", "--store", store, "--json")
    return first, again, rows


def test_grid_trains_every_combination(grid):
    first, _, rows = grid
    assert first["counts"].get("failed", 0) == 0
    assert len(rows) == len(TINY_MODELS) * len(ALL_METHODS) * 2
    assert all(row["status"] == "finished" for row in rows)
    assert RESULT_KEYS <= set(rows[0])
    assert {(r["model"], r["method"]) for r in rows} == {(m, s.split("[")[0]) for m in TINY_MODELS for s in ALL_METHODS}
    for row in rows:
        assert 0 < row["trainable_params"] <= row["total_params"]
        assert row["train_tokens_per_s"] > 0 and row["infer_tokens_per_s"] > 0 and row["peak_memory_bytes"] > 0
        assert 1 <= row["best_epoch"] <= 2 and 0 < row["seconds_to_best"] <= row["wall_s"]
        assert row["provenance"]["versions"]["torch"] and row["provenance"]["config_hash"] == row["run_id"]
        assert row["provenance"]["lock"] == environment_lock()  # the lock's hash and whether it is what runs
        assert len(row["curve"]) >= 1 and {"train_loss", "val_loss"} <= set(row["curve"][0])


def test_full_tuning_trains_every_parameter(grid):
    for row in grid[2]:
        if row["method"] == "full":
            assert row["trainable_params"] == row["total_params"]


def test_splits_identical_across_methods(grid):
    first, _, _ = grid
    digests = {}
    for run in first["runs"]:
        key = (run["task"], run["n_train"])
        digests.setdefault(key, set()).add(json.dumps(run["data_digest"], sort_keys=True))
    assert all(len(found) == 1 for found in digests.values())
    val_test = {json.dumps({k: json.loads(d)[k] for k in ("val", "test")}) for found in digests.values() for d in found}
    assert len(val_test) == 1  # the same validation and test rows at every scale


def test_rerun_trains_nothing(grid):
    first, again, _ = grid
    assert again["counts"].get("finished", 0) == 0
    assert again["counts"]["skipped"] == len(first["runs"])


def test_baselines_are_stored_once_per_model_task_scale(grid):
    first, _, _ = grid
    baselines = [r for r in first["runs"] if r["kind"] == "baseline"]
    assert sorted({r["method"] for r in baselines}) == ["majority", "zero_shot"]
    # majority per model and scale; zero-shot only for the text-to-text models (an encoder's head is untrained)
    assert len(baselines) == len(TINY_MODELS) * 2 + 2 * 2
    assert not any(r["method"] == "zero_shot" and r["model"] == "config:tiny-bert" for r in baselines)
    majority = next(r for r in baselines if r["method"] == "majority" and r["n_train"] == 16)
    assert majority["metrics"]["prediction_counts"][majority["metrics"]["majority_label"]] == 16


def test_file_task_with_held_out_test_file(tmp_path):
    rows = [{"text": f"{'good' if i % 2 else 'bad'} item {i}", "label": "pos" if i % 2 else "neg"} for i in range(40)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    test = tmp_path / "test.jsonl"
    held_out = [{"text": f"{'good' if i % 2 else 'bad'} new item {i}", "label": "pos" if i % 2 else "neg"}
                for i in range(6)]
    test.write_text("".join(json.dumps(r) + "\n" for r in held_out))  # no training input: an overlap is refused
    suite = write_suite(tmp_path / "files.json", tasks=[{"file": str(train), "test": str(test)}], scales=[20])
    code, out, err = run_cli("run", suite, "--store", tmp_path / "r.db", "--json")
    assert code == 0, err
    runs = json.loads(out)["runs"]
    trained = [r for r in runs if r["kind"] == "train"]
    assert len(trained) == 1 and trained[0]["status"] == "finished"
    assert trained[0]["metrics"]["n_test"] == 6 and trained[0]["task"] == f"file:{train}"


def test_dry_run_prints_the_grid_without_a_store(tmp_path):
    suite = write_suite(tmp_path / "dry.json", methods=["lora", "ia3"], seeds=[0, 1])
    code, out, _ = run_cli("run", suite, "--store", tmp_path / "r.db", "--dry-run", "--json")
    grid = json.loads(out)
    assert code == 0 and grid["size"] == 2 * 2 + 1  # methods x seeds + majority (no zero-shot for an encoder)
    assert not (tmp_path / "r.db").exists()


def test_axis_overrides(tmp_path):
    suite = write_suite(tmp_path / "o.json", methods=["lora", "ia3"])
    code, out, _ = run_cli("run", suite, "--method", "bitfit", "--seed", "3", "--scale", "12", "--dry-run", "--json")
    runs = [r for r in json.loads(out)["runs"] if r["kind"] == "train"]
    assert code == 0 and [(r["method"], r["seed"], r["n_train"]) for r in runs] == [("bitfit", 3, 12)]


def test_a_nan_loss_is_stored_as_failed_and_the_grid_goes_on(tmp_path, monkeypatch):
    from peftbench import train

    real_loss = train.batch_loss

    def nan_for_ia3(task_model, batch):
        loss = real_loss(task_model, batch)
        is_ia3 = any("ia3_" in name for name, _ in task_model.model.named_parameters())
        return loss * float("nan") if is_ia3 else loss

    monkeypatch.setattr(train, "batch_loss", nan_for_ia3)
    suite = write_suite(tmp_path / "f.json", methods=["ia3", "lora"])
    store = tmp_path / "r.db"
    code, out, _ = run_cli("run", suite, "--store", store, "--json")
    assert code == 1  # a grid with a failed run says so in its exit code (errors.EXIT_RUNS_FAILED)
    result = json.loads(out)
    status = {r["method"]: (r["status"], r["error"]) for r in result["runs"] if r["kind"] == "train"}
    assert status["ia3"][0] == "failed"
    assert status["ia3"][1].startswith("DivergedError: training loss became nan in epoch 1")
    assert status["lora"] == ("finished", None)
    assert result["counts"] == {"skipped": 0, "finished": 2, "failed": 1}
    # a failed run is tried again on the next invocation; the finished ones are not
    monkeypatch.setattr(train, "batch_loss", real_loss)
    again = run_json("run", suite, "--store", store, "--json")
    assert again["counts"] == {"skipped": 2, "finished": 1}


def test_an_out_of_memory_run_is_stored_with_its_cause_and_the_grid_goes_on(tmp_path, monkeypatch):
    from peftbench import execution

    real_train = execution.train

    def oom_for_lora(task_model, *args, **kwargs):
        if any("lora_" in name for name, _ in task_model.model.named_parameters()):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_train(task_model, *args, **kwargs)

    monkeypatch.setattr(execution, "train", oom_for_lora)
    suite = write_suite(tmp_path / "oom.json", methods=["lora", "ia3"])
    code, out, _ = run_cli("run", suite, "--store", tmp_path / "r.db", "--json")
    assert code == 1
    result = json.loads(out)
    status = {r["method"]: (r["status"], r["error"]) for r in result["runs"] if r["kind"] == "train"}
    assert status["lora"] == ("failed", "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB")
    assert status["ia3"] == ("finished", None)
