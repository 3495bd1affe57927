"""The study protocols of the papers: LR sweep then seeds (Lialin et al.), a dollar budget (Hamilton &
Mueller), costs, extra epochs for a minimum of steps, and the built-in suites' grids."""

import math

import pytest
from conftest import run_cli, run_json, write_suite

from peftbench.suite_files import builtin_suites, load_suite


def _train_rows(store):
    return [row for row in run_json("results", "--store", store, "--json") if row["kind"] == "train"]


# Selecting by validation score needs a model that scores above zero on 16 rows: tiny-bert's head does;
# tiny-llama, random, generates no label word, so its LRs tie on score and differ only in loss.
@pytest.mark.parametrize(("model", "select_by"), [("config:tiny-llama", "val_loss"), ("config:tiny-bert", "val_score")])
def test_sweep_chooses_the_best_validation_lr_and_runs_the_other_seeds_at_it(tmp_path, model, select_by):
    # 1e-6 barely moves and 1e-2 moves a lot, so the two LRs differ on the validation set.
    suite = write_suite(tmp_path / "sweep.json", models=[model], methods=["lora"], epochs=4, scales=[32],
                        baselines=[], sweep={"lr": [1e-6, 1e-2], "select_by": select_by, "then_seeds": [0, 1]})
    grid = run_json("run", suite, "--dry-run", "--json")
    assert grid["size"] == 3 and len(grid["runs"]) == 2 and [w["seed"] for w in grid["waiting"]] == [1]

    store = tmp_path / "r.db"
    run_json("run", suite, "--store", store, "--json")
    rows = _train_rows(store)
    assert len(rows) == 3 and all(row["status"] == "finished" for row in rows)
    sweep_rows = [row for row in rows if row["seed"] == 0]
    key = (lambda row: -row["best_val_loss"]) if select_by == "val_loss" else (lambda row: row["val_score"])
    best = max(sweep_rows, key=key)
    follower = next(row for row in rows if row["seed"] == 1)
    assert follower["lr"] == best["lr"]
    assert key(best) > min(key(row) for row in sweep_rows)  # a real choice, not a tie broken by order
    assert follower["sweep"]["group"] == best["sweep"]["group"]
    if select_by == "val_score":
        # Chosen on the validation split: the score is the validation metric, stored apart from the test's.
        assert all(row["val_score"] is not None for row in sweep_rows)
    # A second invocation trains nothing: the follow-up seed is stored like any run.
    again = run_json("run", suite, "--store", store, "--json")
    assert again["counts"].get("finished", 0) == 0 and again["counts"]["skipped"] == 3


def test_sweep_owns_the_seeds(tmp_path):
    suite = write_suite(tmp_path / "s.json", seeds=[0, 1], sweep={"lr": [1e-3, 1e-4], "then_seeds": [0, 2]})
    code, _, err = run_cli("run", suite, "--dry-run")
    assert code == 2 and "takes its seeds from sweep.then_seeds" in err and err.count("\n") == 1
    suite = write_suite(tmp_path / "t.json", sweep={"lr": [1e-3, 1e-3]})
    code, _, err = run_cli("run", suite, "--dry-run")
    assert code == 2 and "needs distinct learning rates" in err
    # --seed on a swept suite replaces then_seeds: the first seed sweeps.
    suite = write_suite(tmp_path / "u.json", baselines=[], sweep={"lr": [1e-3, 1e-4], "then_seeds": [0, 1]})
    grid = run_json("run", suite, "--seed", "5", "--seed", "6", "--seed", "7", "--dry-run", "--json")
    assert [r["seed"] for r in grid["runs"]] == [5, 5] and [w["seed"] for w in grid["waiting"]] == [6, 7]


def test_a_budget_stops_training_evaluates_the_best_weights_and_records_the_cost(tmp_path):
    # $0.001 at $3.6/h buys one second of training: far short of 50 epochs.
    suite = write_suite(tmp_path / "b.json", epochs=50, scales=[64], patience=100, baselines=[],
                        budget={"usd": 0.001, "gpu_usd_per_hour": 3.6})
    store = tmp_path / "r.db"
    run_json("run", suite, "--store", store, "--json")
    (row,) = _train_rows(store)
    assert row["status"] == "finished" and row["stopped_by"] == "budget"
    assert row["budget"] == {"usd": 0.001, "usd_per_hour": 3.6, "seconds": pytest.approx(1.0)}
    assert 0 < row["steps"] < 50 * math.ceil(64 / 8)
    assert row["train_seconds"] < 1.0 + 2.0  # the cap, plus the step it was checked after and a validation
    assert row["cost_usd"] == pytest.approx(row["wall_s"] * 3.6 / 3600)
    assert row["score"] is not None and row["best_epoch"] >= 1


def test_every_run_records_its_cost_at_a_named_price(tmp_path):
    suite = write_suite(tmp_path / "p.json", price="gcp-v100-n1-standard-8")
    store = tmp_path / "r.db"
    run_json("run", suite, "--store", store, "--json")
    rows = run_json("results", "--store", store, "--baselines", "--json")
    assert {row["kind"] for row in rows} == {"train", "baseline"}
    for row in rows:
        assert row["cost_usd"] == pytest.approx(row["wall_s"] * 2.8874 / 3600)


@pytest.mark.parametrize(("fields", "message"), [
    ({"price": "gcp-v100"}, "Did you mean 'gcp-v100-n1-standard-8'?"),
    ({"budget": {"usd": 1.0}}, "budget needs a price"),
    ({"budget": {"usd": 1.0, "gpu": "h100"}}, "no machine price named 'h100'"),
    ({"budget": {"usd": 1.0, "gpu_usd": 2.0}}, "unknown key 'budget.gpu_usd'. Did you mean 'gpu_usd_per_hour'?"),
])
def test_bad_prices_and_budgets_are_one_line_errors(tmp_path, fields, message):
    store = tmp_path / "r.db"
    code, _, err = run_cli("run", write_suite(tmp_path / "bad.json", **fields), "--store", store)
    assert code == 2 and message in err and err.count("\n") == 1 and not store.exists()


def test_min_steps_adds_epochs_to_small_training_sets():
    suite = load_suite("lialin2024")
    assert suite.epochs_for("all", 400) == 8  # 13 steps of 32 per epoch: 100 steps need 8 epochs
    assert suite.epochs_for("all", 9000) == 3


# Sizes of the built-in grids (`run NAME --dry-run`), with no download: the papers' suites name hub tasks.
GRID_SIZES = {
    # 4 tasks x 3 scales x (5 methods + baselines: majority for the 2 classification tasks, zero-shot for all)
    "pu2023": 4 * 3 * 5 + 3 * (2 + 4),
    # 4 tasks x 13 ablation rows at the medium scale, no baselines
    "pu2023-ablations": 4 * 13,
    # 3 models x 3 tasks x 14 methods x (3 sweep LRs + 2 more seeds) + majority and zero-shot per model/task
    "lialin2024": 3 * 3 * 15 * (3 + 2) + 3 * 3 * 2,
    # 3 models x 14 methods, one seed, + zero-shot per model
    "lialin2024-cnn": 3 * 15 + 3,
    # 2 models x 12 methods + majority and zero-shot per model
    "hamilton2023": 2 * 12 + 2 * 2,
    # 11 methods + majority and zero-shot
    "hamilton2023-offline": 11 + 2,
    # MiniLM: 2 classification tasks x 2 scales x (5 methods x 2 seeds + majority);
    # SmolLM2: 3 tasks x 2 scales x (5 x 2 + zero-shot) + majority for the 2 classification tasks x 2 scales
    "pu2023-offline": 2 * 2 * (10 + 1) + 3 * 2 * (10 + 1) + 2 * 2,
    "quickstart": 2 * (5 + 1),
}


def test_every_builtin_suite_validates_and_its_grid_has_the_expected_size():
    assert set(builtin_suites()) == set(GRID_SIZES)
    for name, size in GRID_SIZES.items():
        load_suite(name)
        # without memory plans, which test_memory checks: tracing every 11B method takes minutes on 2 cores
        grid = run_json("run", name, "--dry-run", "--no-memory-plan", "--json")
        assert grid["size"] == size, name
        assert all(run["memory"] is None for run in grid["runs"]) and not grid["memory_target"]["planned"], name
