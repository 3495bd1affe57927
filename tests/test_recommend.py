"""`peftbench recommend`: from the measurements of the session's tiny grid when they cover the case, from
cited priors when they do not; hard limits exclude methods that break them."""

import json
import shutil
import sqlite3
import statistics

from conftest import GRID_METHODS, run_cli, run_json

from peftbench.configurations import configs
from peftbench.store import read_rows


def ask(store, *args):
    return run_json("recommend", "--store", store, "--json", *args)


def test_measurements_rank_by_relative_score_and_name_their_runs(grid_store):
    answer = ask(grid_store, "--task-type", "classification", "--train-samples", "14")
    assert answer["source"] == "measurements"
    rows = [r for r in read_rows(grid_store) if r["kind"] == "train" and r["task"] == "bbc_topic" and r["n_train"] == 16]
    assert {choice["method"] for choice in answer["ranking"]} == set(GRID_METHODS)
    # expected: per model, each method's mean score over seeds as a share of the model's best, averaged
    shares = {spec: [] for spec in GRID_METHODS}
    for model in ("config:tiny-bert", "config:tiny-t5"):
        means = {spec: statistics.mean(r["score"] for r in rows if r["model"] == model and r["method_spec"] == spec)
                 for spec in GRID_METHODS}
        best = max(means.values())
        for spec, mean in means.items():
            shares[spec].append(mean / best if best > 0 else float(mean == best))
    ranked = [choice["method"] for choice in answer["ranking"]]
    relative = [statistics.mean(shares[spec]) for spec in ranked]
    assert relative == sorted(relative, reverse=True)
    first = answer["ranking"][0]
    assert f"{relative[0]:.0%} of the best" in first["reasons"][0]
    assert sorted(first["evidence"]) == sorted(r["run_id"] for r in rows if r["method_spec"] == ranked[0])
    assert "16 training examples (asked: 14)" in answer["notes"][0]


def test_far_from_the_measured_sizes_the_priors_answer_with_citations(grid_store):
    answer = ask(grid_store, "--task-type", "classification", "--train-samples", "5000", "--priority", "time")
    assert answer["source"] == "priors"
    assert "not from measurements" in answer["notes"][0] and "[8, 16]" in answer["notes"][0]
    ranked = [choice["method"] for choice in answer["ranking"]]
    assert ranked[:3] == ["ia3", "lora", "bitfit"]  # Pu et al. 3.2: PEFT for time at high scale
    assert all(choice["sources"] for choice in answer["ranking"])
    assert "Pu et al." in answer["ranking"][0]["sources"][0] and "section 3.2" in answer["ranking"][0]["sources"][0]
    low = ask(grid_store, "--task-type", "classification", "--train-samples", "60", "--priority", "time")
    assert [choice["method"] for choice in low["ranking"]][0] == "full"  # full converges faster with little data


def test_no_store_says_so_then_the_priors_answer_and_a_small_budget_cites_hamilton(tmp_path):
    answer = ask(tmp_path / "none.db", "--task-type", "generation", "--train-samples", "16", "--max-usd", "1")
    assert answer["source"] == "priors" and not (tmp_path / "none.db").exists()
    assert answer["notes"][0].startswith(f"There is no results store at '{tmp_path / 'none.db'}', so this ranking")
    assert any("Hamilton & Mueller" in note and "Table 1" in note for note in answer["notes"])
    assert any("prompt tuning nearly failed" in note for note in answer["notes"])  # generation, low scale
    assert any("--max-usd cannot be checked" in note for note in answer["notes"])


def test_memory_and_time_limits_exclude_methods(grid_store):
    rows = [r for r in read_rows(grid_store) if r["kind"] == "train" and r["task"] == "bbc_topic" and r["n_train"] == 8]
    peaks = {spec: max(r["peak_memory_bytes"] for r in rows if r["method_spec"] == spec) / 1e9 for spec in GRID_METHODS}
    limit = (max(peaks.values()) + min(peaks.values())) / 2
    answer = ask(grid_store, "--task-type", "classification", "--train-samples", "8", "--priority", "memory",
                 "--max-memory-gb", f"{limit:.6f}")
    kept = {choice["method"] for choice in answer["ranking"]}
    excluded = {item["method"] for item in answer["excluded"]}
    assert kept == {spec for spec, peak in peaks.items() if peak <= limit} and kept
    assert excluded == set(GRID_METHODS) - kept and "full" in excluded
    walls = {spec: max(r["wall_s"] for r in rows if r["method_spec"] == spec) for spec in GRID_METHODS}
    fastest = min(walls.values())
    timed = ask(grid_store, "--task-type", "classification", "--train-samples", "8", "--max-minutes",
                repr(fastest / 60 * (1 + 1e-9)))
    assert [choice["method"] for choice in timed["ranking"]] == [min(walls, key=walls.get)]


def test_a_dollar_limit_needs_prices(grid_store, tmp_path):
    answer = ask(grid_store, "--task-type", "classification", "--train-samples", "8", "--max-usd", "5")
    assert answer["ranking"] == [] and all("no price known" in item["reason"] for item in answer["excluded"])
    priced = tmp_path / "priced.db"
    shutil.copy(grid_store, priced)
    with sqlite3.connect(priced) as connection:  # a price for every run: full tuning $9, the others $1
        for run_id, spec, result in connection.execute("SELECT run_id, spec, result FROM runs").fetchall():
            cost = 9.0 if json.loads(spec)["method_spec"] == "full" else 1.0
            connection.execute("UPDATE runs SET result = ? WHERE run_id = ?",
                               (json.dumps({**json.loads(result), "cost_usd": cost}), run_id))
    answer = ask(priced, "--task-type", "classification", "--train-samples", "8", "--max-usd", "5")
    assert {item["method"] for item in answer["excluded"]} == {"full"}
    assert {choice["method"] for choice in answer["ranking"]} == set(GRID_METHODS) - {"full"}


def test_recommend_bad_input(grid_store):
    code, _, err = run_cli("recommend", "--task-type", "regression", "--train-samples", "10")
    assert code == 2 and "regression" in err
    code, _, err = run_cli("recommend", "--task-type", "classification", "--train-samples", "0")
    assert code == 2 and "--train-samples" in err
    code, out, _ = run_cli("recommend", "--task-type", "classification", "--train-samples", "16",
                           "--store", grid_store)
    assert code == 0 and "ranked from MEASUREMENTS" in out and "evidence:" in out


def test_limits_that_exclude_everything_name_the_nearest_method(grid_store):
    # classification is asked, so the generation task's runs (bbc_headline) must not count
    rows = [r for r in read_rows(grid_store) if r["kind"] == "train" and r["n_train"] == 8 and r["task"] == "bbc_topic"]
    worst = {spec: max(r["peak_memory_bytes"] for r in rows if r["method_spec"] == spec) / 1e9 for spec in GRID_METHODS}
    nearest = min(worst, key=worst.get)
    answer = ask(grid_store, "--task-type", "classification", "--train-samples", "8", "--max-memory-gb", "0.01")
    assert answer["ranking"] == []
    note = answer["notes"][-1]
    assert note.startswith("No measured method meets the hard limits: --max-memory-gb 0.01 excludes 4 method(s);")
    assert f"the nearest is {nearest} at {worst[nearest]:.3g} GB" in note
    suggested = note.split("--max-memory-gb ")[-1].split(" would keep it")[0]
    kept = ask(grid_store, "--task-type", "classification", "--train-samples", "8", "--max-memory-gb", suggested)
    assert nearest in {choice["method"] for choice in kept["ranking"]}  # the suggested limit does keep it


def test_cpu_memory_noise_random_weights_and_one_seed_are_said(grid_store):
    answer = ask(grid_store, "--task-type", "classification", "--train-samples", "8", "--priority", "memory")
    assert any("CPU process's peak resident set" in note and "run-to-run spread" in note for note in answer["notes"])
    assert any("random weights" in note and "no significance is claimed" in note for note in answer["notes"])
    assert any("(random weights: not evidence about the method)" in reason
               for choice in answer["ranking"] for reason in choice["reasons"])
    from peftbench.recommend import Limits, from_measurements

    one_seed = [r for r in read_rows(grid_store) if r["seed"] == 0 and r["n_train"] == 8 and r["task"] == "bbc_topic"]
    notes = from_measurements(configs(one_seed), "classification", 8, 8, "performance", Limits()).notes
    assert any(note.startswith("One seed per configuration") for note in notes)


def test_ties_are_explained():
    from peftbench.recommend import Limits, from_measurements

    def run(spec, seed, score, peak):
        stored = {"model": "offline:m", "task": "t", "scale": 8, "n_train": 8, "method": spec, "method_spec": spec,
                  "seed": seed}  # what the store's spec holds; the report groups seeds by it
        return {"run_id": f"{spec}{seed}", "kind": "train", "status": "finished", **stored, "spec": stored,
                "primary_metric": "accuracy", "score": score, "peak_memory_bytes": peak, "wall_s": 10.0,
                "infer_tokens_per_s": 100.0, "is_reference": spec == "full"}  # a fact the row records

    rows = [run("lora", s, 0.80, 1e9) for s in (0, 1)] + [run("ia3", s, 0.90, 1e9) for s in (0, 1)] + \
        [run("full", s, 0.90, 2e9) for s in (0, 1)]
    memory = from_measurements(configs(rows), "classification", 8, 8, "memory", Limits())
    assert [choice.method for choice in memory.ranking] == ["ia3", "lora", "full"]
    assert "ties with lora on memory (100% of the best); ia3 is placed first by its higher score" in \
        memory.ranking[0].reasons
    performance = from_measurements(configs(rows), "classification", 8, 8, "performance", Limits())
    assert [choice.method for choice in performance.ranking][:2] == ["full", "ia3"]  # full tuning first
    assert any(reason.startswith("ties with ia3 on performance") and "their scores tie too" in reason
               for reason in performance.ranking[0].reasons)
