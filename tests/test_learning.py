"""Runs that did not learn are named and never recommended; methods are compared like with like. The store is
filled by the real CLI with a tiny grid in which full tuning ran on one of two tasks (LoRA and LN tuning on
both); where a verdict needs trained weights, a copy of it has its model renamed from `config:` (random
weights, never judged) to `offline:` and chosen per-row results written into its rows."""

import json
import shutil
import sqlite3
import statistics

import pytest
from conftest import run_cli, run_json, write_suite

from peftbench import report
from peftbench.configurations import configs
from peftbench.learning import DID_NOT_LEARN, LEARNED, NOT_CHECKED
from peftbench.recommend import Limits, from_measurements
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
    with sqlite3.connect(store) as connection:  # LoRA the fastest and the lightest: the pick it must not be
        for run_id, spec, result in connection.execute("SELECT run_id, spec, result FROM runs").fetchall():
            if json.loads(spec)["method_spec"] == "lora":
                light = {**json.loads(result), "wall_s": 0.01, "peak_memory_bytes": 1, "infer_tokens_per_s": 1e9}
                connection.execute("UPDATE runs SET result = ? WHERE run_id = ?", (json.dumps(light), run_id))
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


def test_random_weights_and_missing_evidence_are_not_checked(uneven_store, judged):
    for config in configs(read_rows(uneven_store)):
        if config.kind == "train":
            assert config.learning.verdict == NOT_CHECKED and not config.learning.excluded
            assert config.learning.reason.startswith("not checked (random-weight model")
    rows = read_rows(judged[0])
    assert {c.learning.reason for c in configs([row for row in rows if row["kind"] == "train"])} == {
        "not checked (no baseline was run on this model, task and data size)"}
    older = [{**row, "metrics": {k: v for k, v in row["metrics"].items() if k != "per_example"}} for row in rows]
    mcc = [{**row, "primary_metric": "mcc"} for row in rows]
    for changed, why in ((older, "runs stored without per-row test results"),
                         (mcc, "its metric, mcc, is not a mean over test rows")):
        verdicts = {(c.task, c.label): c.learning for c in configs(changed) if c.kind == "train"}
        assert verdicts[("bbc_topic", "full")].reason.startswith(f"not checked ({why}): 1.000 vs majority")
        assert not verdicts[("bbc_topic", "full")].excluded
        # at the baseline's score it did not learn, whatever an interval would say
        lora = verdicts[("bbc_topic", "lora")]
        assert lora.excluded and lora.paired is None
        assert lora.reason.endswith(", not above it, so no interval is needed")


def ask(store, *args):
    return run_json("recommend", "--store", store, "--json", *args)


def test_a_method_that_did_not_learn_is_never_recommended(judged):
    store, _ = judged
    for priority in ("performance", "memory", "time", "inference"):
        answer = ask(store, "--task-type", "classification", "--train-samples", "16", "--priority", priority)
        assert [choice["method"] for choice in answer["ranking"]][0] == "full" if priority == "performance" else True
        assert "lora" not in [choice["method"] for choice in answer["ranking"]]
        [excluded] = [item for item in answer["excluded"] if item["method"] == "lora"]
        assert excluded["reason"].startswith("did not learn on offline:tiny / ") and "vs majority" in excluded["reason"]
    built = report.build(read_rows(store), "judged")
    assert len(built.summary) == 2
    for block in built.summary:
        assert {pick.priority for pick in block.picks} == {"performance", "memory", "time", "inference"}
        assert "lora" not in {pick.config.label for pick in block.picks}
        assert any(note.startswith(f"Not recommended under any priority: lora, which did not learn on offline:tiny"
                                   f" / {block.task} / n=16 (") for note in block.notes)
        [performance] = [pick for pick in block.picks if pick.priority == "performance"]
        assert any(why.startswith("learned: 1.000 vs majority") for why in performance.why)


def test_when_no_method_learned_none_is_recommended(uneven_store, tmp_path):
    rows = rewritten(uneven_store, tmp_path / "flat.db", lambda row: None if row["kind"] == "baseline" else
                     [0] * 24)
    answer = ask(tmp_path / "flat.db", "--task-type", "classification", "--train-samples", "16")
    assert answer["ranking"] == [] and {item["method"] for item in answer["excluded"]} == {"full", "lora", "ln_tuning"}
    assert answer["notes"][-1].startswith("No measured method learned")
    assert any(note.startswith("On offline:tiny / finefood_sentiment / n=16 no method learned") for note in answer["notes"])
    block = report.build(rows, "flat").summary[0]
    assert block.picks == [] and any("No measured method learned" in note for note in block.notes)


def test_methods_are_compared_only_on_the_blocks_they_all_ran_on(uneven_store):
    rows = read_rows(uneven_store)
    answer = ask(uneven_store, "--task-type", "classification", "--train-samples", "16")
    assert answer["compared_on"] == ["config:tiny-bert / bbc_topic / n=16"]
    assert any(note.startswith("Compared like with like: only on the 1 block(s) every ranked method ran on")
               and "left out config:tiny-bert / finefood_sentiment / n=16 (no full there)" in note
               for note in answer["notes"])
    topic = {row["run_id"] for row in rows if row["task"] == "bbc_topic"}
    for choice in answer["ranking"]:
        assert set(choice["evidence"]) <= topic and not any("finefood" in reason for reason in choice["reasons"])
    means = {spec: statistics.mean(r["score"] for r in rows if r["task"] == "bbc_topic" and r["method_spec"] == spec)
             for spec in ("full", "lora", "ln_tuning")}
    for choice in answer["ranking"]:
        share = means[choice["method"]] / max(means.values())
        assert choice["reasons"][0].startswith(f"performance: {share:.0%} of the best on average over 1 model")
    food = ask(uneven_store, "--task", "finefood_sentiment")
    assert {choice["method"] for choice in food["ranking"]} == {"lora", "ln_tuning"}
    assert food["compared_on"] == ["config:tiny-bert / finefood_sentiment / n=16"]
    assert food["scope"] == {"--task": "finefood_sentiment"} and food["train_samples"] == 16
    for block in report.build(rows, "uneven").summary:
        assert ("full" in {c.label for c in block.trained}) == (block.task == "bbc_topic")
        shown = " ".join(pick.config.label + " ".join(pick.why) for pick in block.picks)
        assert ("full" in shown.split()) <= (block.task == "bbc_topic")


def test_when_no_block_holds_every_method_the_one_on_fewest_is_left_out(uneven_store):
    # full tuning on bbc_topic, LoRA on finefood_sentiment, LN tuning on both: no block holds all three
    rows = [row for row in read_rows(uneven_store) if not (row["task"] == "bbc_topic" and row["method_spec"] == "lora")]
    answer = from_measurements(configs(rows), "classification", 16, 16, "performance", Limits())
    assert {choice.method for choice in answer.ranking} == {"full", "ln_tuning"}  # a tie: full tuning is kept
    assert answer.compared_on == ["config:tiny-bert / bbc_topic / n=16"]
    assert answer.excluded == [{"method": "lora", "reason": "not compared: it ran only on config:tiny-bert /"
                                " finefood_sentiment / n=16, and no block holds it with every other method"}]


def test_recommend_scope_flags_and_a_missing_store(uneven_store, tmp_path):
    code, out, err = run_cli("recommend", "--store", uneven_store, "--task", "bbc_topic", "--model", "config:tiny-bert",
                             "--scale", "16", "--suite", "uneven")
    assert code == 0, err
    assert out.splitlines()[0] == ("classification, 16 training examples, priority performance, --task bbc_topic,"
                                   " --model config:tiny-bert, --scale 16, --suite uneven: ranked from MEASUREMENTS")
    for args, message in [(["--task", "nope"], "the store has no finished runs of --task nope; it has bbc_topic,"
                                               " finefood_sentiment (see `peftbench results`)"),
                          (["--task", "bbc_topic", "--task-type", "generation"], "--task bbc_topic is a"
                                                                                  " classification task, not generation"),
                          (["--suite", "uneven", "--scale", "low"], "the store has no finished runs of --scale low")]:
        code, out, err = run_cli("recommend", "--store", uneven_store, *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and not out
    missing = tmp_path / "absent.db"
    code, out, err = run_cli("recommend", "--store", missing, "--task-type", "classification", "--train-samples", "50")
    assert code == 0 and out.splitlines()[1] == (f"There is no results store at '{missing}', so this ranking comes"
                                                 " from the papers, not from measurements (`peftbench run` measures"
                                                 " your own; --store PATH reads another store).")
    for args in (["--task", "bbc_topic", "--task-type", "classification", "--train-samples", "50"], []):
        code, out, err = run_cli("recommend", "--store", missing, *args)
        assert code == 2 and "no results store at" in err and len(err.strip().splitlines()) == 1
    assert not missing.exists()


def test_results_run_and_the_report_mark_what_did_not_learn(judged, uneven_store, tmp_path, monkeypatch):
    store, _ = judged
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run_cli("results", "--store", store)
    assert code == 0, err
    assert " ".join(out.split()).startswith(f"7 configurations of 12 runs in {store}")
    for task, trained in (("bbc_topic", ["full", "ln_tuning"]), ("finefood_sentiment", ["ln_tuning"])):
        table = out.split(f"offline:tiny · {task} · n=16")[1].split("─\n")[1].split("\nlora: did not learn")[0]
        lines = [line.split()[:4] for line in table.splitlines()]
        # best first; the baseline ties LoRA and is stored first; a score is `mean ± std` with two seeds
        assert lines == [[method, "2", "1.000", "±"] for method in trained] + [["majority", "1", f"{lines[-1][2]}",
                                                                             "baseline"], ["lora", "2", lines[-1][2], "±"]]
        assert [line.split()[5 if line.split()[0] != "majority" else 3] for line in table.splitlines()] == \
            ["yes"] * len(trained) + ["baseline", "NO"]
    assert " ".join(out.split()).count("lora: did not learn: ") == 2
    rows = run_json("results", "--store", store, "--json", "--baselines")
    verdicts = {(row["task"], row["method_spec"]): row["learning"] and row["learning"]["verdict"] for row in rows}
    assert verdicts[("bbc_topic", "lora")] == DID_NOT_LEARN and verdicts[("bbc_topic", "full")] == LEARNED
    assert verdicts[("bbc_topic", "majority")] is None
    written = run_json("report", "--store", store, "--out", tmp_path / "report", "--format", "md,csv", "--json")
    assert "learned" in written["tables"]
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert markdown.count(" † |") == 2 and "† did not learn: not significantly above the best baseline" in markdown
    learned = (tmp_path / "report" / "csv" / "learned.csv").read_text().splitlines()
    assert sum(line.endswith(",did not learn") for line in learned) == 2
    assert sum(line.endswith(",learned") for line in learned) == 3
    suite = uneven_store.parent / "uneven.json"
    code, out, err = run_cli("run", suite, "--store", uneven_store, "--device", "cpu")  # every run stored: skipped
    assert code == 0, err
    assert any(line.split()[:4] == ["method", "seeds", "accuracy", "learned"] for line in out.splitlines())
    assert "unchecked (random-weight model" in " ".join(out.split())
