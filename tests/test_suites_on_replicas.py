"""The papers' suites as a user with the hub runs them: `peftbench run` of pu2023, hamilton2023 and lialin2024
on the hub replicas and half-precision checkpoints of tests/hub_replicas.py (one or two methods each, scale 16)."""

import math

import pytest
import torch

from conftest import run_json
from hub_replicas import checkpoints, hub_cache  # noqa: F401 (fixtures)


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: OpenMP's second thread costs far more than it saves on matrices
    this small (a 12x32 by 32x64 matmul took ~1 ms with two threads under load, ~8 us with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(tmp_path, *args) -> list[dict]:
    result = run_json("run", *args, "--scale", "16", "--store", tmp_path / "results.db", "--device", "cpu", "--json")
    assert result["counts"].get("failed", 0) == 0 and result["counts"].get("finished") == len(result["runs"])
    assert all(run["status"] == "finished" and run["weights_dtype"] == "float32" for run in result["runs"])
    return result["runs"]


def test_pu2023_on_a_bf16_t5_finishes_all_four_tasks(hub_cache, checkpoints, tmp_path, one_thread):
    runs = _run(tmp_path, "pu2023", "--model", checkpoints["t5-bfloat16"],
                "--method", "full", "--method", "lora_scaling[r=2,s=1,targets=qkvo]")
    # per task: two methods and zero-shot, plus majority for the two classification tasks
    assert sorted(run["task"] for run in runs) == sorted(["ag_news"] * 4 + ["cola"] * 4 + ["e2e_nlg"] * 3
                                                         + ["samsum"] * 3)
    for run in runs:
        if run["task"] == "e2e_nlg":  # the replica's 5 test MRs, each scored against all of its 14 references
            assert (run["metrics"]["n_test"], run["metrics"]["n_references"]) == (5, 14)
            assert run["data_sizes"]["test"] == {"rows": 14, "inputs": 5}
        if run["kind"] == "train":
            assert run["data_sizes"]["train"]["rows"] == 16 and run["steps"] > 0


def test_hamilton2023_full_tuning_on_fp16_opt_and_bf16_llama(hub_cache, checkpoints, tmp_path, one_thread):
    runs = _run(tmp_path, "hamilton2023", "--model", checkpoints["opt-float16"],
                "--model", checkpoints["llama-bfloat16"], "--method", "full")
    trained = [run for run in runs if run["kind"] == "train"]
    assert len(trained) == 2 and len(runs) == 6  # full, majority and zero-shot per model
    for run in trained:
        assert run["steps"] > 0 and all(math.isfinite(epoch["train_loss"]) for epoch in run["curve"])
        assert math.isfinite(run["best_val_loss"])


def test_lialin2024_on_a_bf16_t5_finishes_boolq_rte_copa_and_cnn_dailymail(hub_cache, checkpoints, tmp_path,
                                                                          one_thread):
    method = ["--model", checkpoints["t5-bfloat16"], "--method", "lora[r=8,alpha=8,targets=qv]"]
    nlu = _run(tmp_path, "lialin2024", *method, "--seed", "0")  # the LR sweep on the first seed only
    assert {run["task"] for run in nlu} == {"boolq", "rte", "copa"}
    assert sorted(run["lr"] for run in nlu if run["task"] == "copa" and run["kind"] == "train") == [1e-5, 1e-4, 1e-3]
    cnn = _run(tmp_path, "lialin2024-cnn", *method)
    assert {run["task"] for run in cnn} == {"cnn_dailymail"} and any(run["kind"] == "train" for run in cnn)
