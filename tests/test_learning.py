"""Runs that did not learn are named and never recommended; methods are compared like with like. The store is
filled by the real CLI with a tiny grid in which full tuning ran on one of two tasks (LoRA and LN tuning on
both); where a verdict needs trained weights, a copy of it has its model renamed from `config:` (random
weights, never judged) to `offline:` and chosen per-row results written into its rows."""

import json
import shutil
import sqlite3

import pytest
from conftest import run_cli, run_json, write_suite

from peftbench.configurations import configs
from peftbench.learning import DID_NOT_LEARN, LEARNED, NOT_CHECKED
from peftbench.store import read_rows

TASKS = ["bbc_topic", "finefood_sentiment"]


@pytest.fixture(scope="module")
def uneven_store(tmp_path_factory):
    """LoRA and LN tuning on both tasks, full tuning on bbc_topic only; two seeds; majority baselines."""
    folder = tmp_path_factory.mktemp("uneven")
    store = folder / "results.db"
    suite = write_suite(folder / "uneven.json", tasks=TASKS, methods=["lora", "ln_tuning"], scales=[16],
                        seeds=[0, 1], epochs=1, test_cap=24)
    run_json("run", suite, "--store", store, "--device", "cpu", "--json")
    run_json("run", suite, "--store", store, "--device", "cpu", "--method", "full", "--task", "bbc_topic", "--json")
    return store


def rewritten(source, target, per_row) -> list[dict]:
    """A copy of the store whose model has trained weights (offline:tiny) and whose runs answered as
    `per_row(row)` says (a list of 0/1 per test row, or None to keep the stored one); its rows."""
    shutil.copy(source, target)
    with sqlite3.connect(target) as connection:
        for run_id, kind, spec, result in connection.execute("SELECT run_id, kind, spec, result FROM runs").fetchall():
            spec, result = json.loads(spec), json.loads(result)
            spec["model"] = "offline:tiny"
            answers = per_row({"kind": kind, **spec, **result})
            if answers is not None:
                result["metrics"]["per_example"] = answers
                result["score"] = result["metrics"]["accuracy"] = sum(answers) / len(answers)
            connection.execute("UPDATE runs SET spec = ?, result = ? WHERE run_id = ?",
                               (json.dumps(spec), json.dumps(result), run_id))
    return read_rows(target)


@pytest.fixture(scope="module")
def judged(uneven_store, tmp_path_factory):
    """The store with trained weights, and the majority baseline's per-row results per task: LoRA answers
    exactly as the majority baseline (its rate, on the same rows), LN tuning and full tuning get every test
    row right."""
    majority = {row["task"]: row["metrics"]["per_example"] for row in read_rows(uneven_store)
                if row["kind"] == "baseline"}
    store = tmp_path_factory.mktemp("judged") / "results.db"
    rewritten(uneven_store, store, lambda row: None if row["kind"] == "baseline" else
              majority[row["task"]] if row["method_spec"] == "lora" else [1] * len(majority[row["task"]]))
    return store, majority


def test_a_configuration_at_the_majority_rate_did_not_learn(judged):
    store, majority = judged
    verdicts = {(c.task, c.label): c.learning for c in configs(read_rows(store)) if c.kind == "train"}
    for task in TASKS:
        lora, ln = verdicts[(task, "lora")], verdicts[(task, "ln_tuning")]
        rate = sum(majority[task]) / len(majority[task])
        assert lora.verdict == DID_NOT_LEARN and lora.excluded and lora.baseline == "majority"
        assert lora.paired.difference == 0 and lora.paired.low <= 0 <= lora.paired.high
        assert lora.reason.startswith(f"did not learn: {rate:.3f} vs majority {rate:.3f}, difference +0.000 [")
        assert lora.reason.endswith("over 24 test rows")
        assert ln.verdict == LEARNED and ln.paired.low > 0 and not ln.excluded
    assert verdicts[("bbc_topic", "full")].verdict == LEARNED


def test_random_weights_and_missing_evidence_are_not_checked(uneven_store):
    rows = read_rows(uneven_store)
    for config in configs(rows):
        if config.kind == "train":
            assert config.learning.verdict == NOT_CHECKED and not config.learning.excluded
            assert config.learning.reason.startswith("not checked (random-weight model")
    renamed = [{**row, "model": "offline:tiny", "spec": {**row["spec"], "model": "offline:tiny"}} for row in rows]
    without_baselines = [row for row in renamed if row["kind"] == "train"]
    assert {c.learning.reason for c in configs(without_baselines)} == {
        "not checked (no baseline was run on this model, task and data size)"}
    older = [{**row, "metrics": {k: v for k, v in row["metrics"].items() if k != "per_example"}} for row in renamed]
    reasons = {c.learning.reason.split(":")[0] for c in configs(older) if c.kind == "train"}
    assert reasons == {"not checked (runs stored without per-row test results)"}
    mcc = [{**row, "primary_metric": "mcc"} for row in renamed]
    assert {c.learning.verdict for c in configs(mcc) if c.kind == "train"} == {NOT_CHECKED}
