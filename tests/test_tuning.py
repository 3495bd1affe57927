"""`peftbench tune` (peftbench.tuning): every method of a block gets the same number of trials, trial 0 at the
defaults, the rest from a seeded TPE sampler, pruned by successive halving on the validation metric; the best
trial and the defaults then run on every seed. A study lives in the store: a rerun trains nothing, a SIGKILL
loses only the trial in flight, and the same seed gives the same trials."""

import json
import signal
import sqlite3
from collections import Counter

import pytest
from conftest import run_cli, run_json, write_suite
from test_resilience import _start, _wait_until

from peftbench.api import results
from peftbench.tuning.search import Pruning
from peftbench.tuning.studies import HistoryTrial

# Two methods on tiny-bert: lora searches lr and r, ia3 lr only. Four epochs put the rungs at epochs 1 and 3.
TRIALS = 5
TUNED = dict(methods=["lora", "ia3"], scales=[32], epochs=4, patience=4, seeds=[0, 1])


def _tune(suite, store, *flags) -> dict:
    return run_json("tune", suite, "--store", store, "--json", *flags)


def _trials(store) -> dict[tuple[str, int], dict]:
    """(method spec the study tunes, trial number) -> the trial's row, from every stored row on the trial seed."""
    found = {}
    for row in results(store):
        part = row.get("tune")
        if part and row["seed"] == part["trial_seed"]:
            key = (part["method_spec"], part["trial"])
            assert key not in found, f"trial {key} stored twice"
            found[key] = row
    return found


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tuned")
    suite = write_suite(folder / "tuned.json", **TUNED, tune={"trials": TRIALS})
    store = folder / "r.db"
    return suite, store, _tune(suite, store)


def test_every_method_gets_exactly_n_trials_the_first_at_its_defaults_and_some_are_pruned(tuned):
    suite, store, output = tuned
    trials = _trials(store)
    assert Counter(method for method, _ in trials) == {"lora": TRIALS, "ia3": TRIALS}
    assert {number for _, number in trials} == set(range(TRIALS))
    assert all(row["status"] == "finished" for row in trials.values())
    # Trial 0 runs what `peftbench run` would: the method's default learning rate and options.
    assert trials[("lora", 0)]["lr"] == 3e-4 and trials[("lora", 0)]["tune"]["params"] == {"lr": 3e-4, "r": 8}
    assert trials[("ia3", 0)]["tune"]["params"] == {"lr": 3e-4}
    # The same epoch cap for every method; a pruned trial stopped early, with its curve and no test score.
    assert {row["epochs"] for row in trials.values()} == {4}
    pruned = [row for row in trials.values() if row["stopped_by"] == "pruned"]
    assert pruned and all(row["score"] is None and len(row["curve"]) in (1, 3) for row in pruned)  # at a rung
    assert all(all("val_score" in point for point in row["curve"]) for row in trials.values())
    # The learning rates searched stay within a factor 10 of the default; lora's rank from its declared axis.
    assert all(3e-5 <= row["lr"] <= 3e-3 for row in trials.values())
    assert {row["tune"]["params"]["r"] for (method, _), row in trials.items() if method == "lora"} <= {4, 8, 16, 32}
    studies = {study["method"]: study for study in output["studies"]}
    assert {study["trials"].get("pruned", 0) for study in studies.values()} != {0}
    assert all(sum(study["trials"].values()) == TRIALS for study in studies.values())


def test_the_best_trial_and_the_defaults_run_on_every_seed_and_are_chosen_on_validation(tuned):
    suite, store, output = tuned
    rows = results(store)
    trials = _trials(store)
    for study in output["studies"]:
        complete = [trials[(study["method"], entry["trial"])] for entry in study["validation"]
                    if entry["state"] == "complete"]
        # The best validation score; among equal scores the lower validation loss, then the earlier trial.
        best = max(complete, key=lambda row: (row["val_score"], -row["best_val_loss"], -row["tune"]["trial"]))
        assert study["tuned"]["trial"] == best["tune"]["trial"] and study["default"]["trial"] == 0
        for chosen in (study["default"], study["tuned"]):
            runs = [row for row in rows if row["run_id"] in chosen["runs"]]
            assert sorted(row["seed"] for row in runs) == [0, 1]  # the trial, then the same setting on seed 1
            assert chosen["score"]["n"] == 2
            assert len({json.dumps({k: v for k, v in row["spec"].items() if k != "seed"}, sort_keys=True)
                        for row in runs}) == 1  # one configuration: the spec but for its seed


def test_a_rerun_after_completion_trains_nothing(tuned):
    suite, store, _ = tuned
    again = _tune(suite, store)
    assert again["counts"].get("finished", 0) == 0 and again["counts"].get("failed", 0) == 0


def test_another_sampler_seed_gives_other_trials_from_the_same_defaults(tuned, tmp_path):
    suite, store, _ = tuned
    first = {key: row["tune"]["params"] for key, row in _trials(store).items()}
    other = tmp_path / "other.db"
    _tune(suite, other, "--seed", "0", "--set", "tune.seed=1")  # the trial seed alone: no second seed's runs
    changed = {key: row["tune"]["params"] for key, row in _trials(other).items()}
    assert changed.keys() == first.keys() and changed[("lora", 0)] == first[("lora", 0)]  # the defaults stay
    assert all(changed[key] != first[key] for key in first if key[1] > 0)


def test_a_sigkill_mid_study_finishes_with_n_trials_none_twice_and_the_same_trials(tuned, tmp_path):
    """The same seed gives the same trials: a study killed and resumed in another store ends with the very runs of
    the fixture's uninterrupted one."""
    suite, reference, _ = tuned
    store = tmp_path / "killed.db"

    def trial_running(process) -> bool:
        if not store.exists():
            return False
        with sqlite3.connect(store, timeout=30) as connection:
            found = connection.execute("SELECT status, json_extract(spec, '$.tune.trial') FROM runs").fetchall()
        return sum(status == "finished" and trial is not None for status, trial in found) >= 3 and \
            any(status == "running" and trial is not None for status, trial in found)

    process = _start(suite, store, command="tune")
    _wait_until(process, trial_running)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert _tune(suite, store)["counts"].get("finished", 0) > 0
    assert _trials(store).keys() == _trials(reference).keys()  # TRIALS per method, none twice
    assert {key: row["run_id"] for key, row in _trials(store).items()} == \
        {key: row["run_id"] for key, row in _trials(reference).items()}  # the same trials as without the kill


SETTINGS = {"select_by": "val_score", "sampler": {"seed": 0, "startup_trials": 3},
            "pruner": {"name": "successive_halving", "reduction_factor": 3, "min_epochs": 1},
            "space": {"lr": {"low": 1e-5, "high": 1e-3, "log": True}}}


def _history(values_at_epoch_1: list[float]) -> list[HistoryTrial]:
    return [HistoryTrial(number, {"lr": 1e-4}, "complete", value, ((1, value), (2, value), (3, value)))
            for number, value in enumerate(values_at_epoch_1)]


def test_the_pruner_keeps_a_trial_only_among_the_top_third_at_each_rung():
    # Epoch 1 is rung 0: with three earlier trials at 0.5, 0.6, 0.7 and this one, 4 // 3 = 1 trial is promoted.
    history = _history([0.5, 0.6, 0.7])
    assert Pruning(SETTINGS, history).should_stop(1, 0.65)
    assert not Pruning(SETTINGS, history).should_stop(1, 0.75)
    # Between rungs (epoch 2) nothing is decided; at epoch 3 (rung 1) the trial meets the others' epoch-3 values.
    pruning = Pruning(SETTINGS, history)
    assert not pruning.should_stop(1, 0.8) and not pruning.should_stop(2, 0.1)
    assert pruning.should_stop(3, 0.6)
    # Six earlier trials: the top two of seven go on.
    six = _history([0.1, 0.2, 0.3, 0.4, 0.5, 0.9])
    assert not Pruning(SETTINGS, six).should_stop(1, 0.6) and Pruning(SETTINGS, six).should_stop(1, 0.45)
    # Without pruning nothing stops.
    assert not Pruning({**SETTINGS, "pruner": {"name": "none"}}, history).should_stop(1, 0.0)


def test_prune_false_prunes_nothing(tuned, tmp_path):
    suite, store, _ = tuned
    method = next(method for (method, _), row in _trials(store).items() if row["stopped_by"] == "pruned")
    _tune(suite, tmp_path / "r.db", "--seed", "0", "--method", method, "--set", "tune.prune=false")
    trials = _trials(tmp_path / "r.db")
    assert len(trials) == TRIALS and not [row for row in trials.values() if row["stopped_by"] == "pruned"]


def test_the_search_space_comes_from_the_methods_hook_an_option_the_suite_sets_is_not_searched(tmp_path):
    suite = write_suite(tmp_path / "s.json", methods=["lora[r=16]", "prompt_tuning"], models=["config:tiny-t5"],
                        tune={"trials": 2, "space": {"lora": {"lr": {"low": 1e-4, "high": 1e-3}}}})
    grid = run_json("tune", suite, "--dry-run", "--json")
    spaces = {entry["tune"]["method_spec"]: entry["tune"]["space"] for entry in grid["waiting"]}
    assert spaces["lora[r=16]"] == {"lr": {"low": 1e-4, "high": 1e-3, "log": True}}  # r is the suite's choice
    assert spaces["prompt_tuning"]["tokens"] == {"choices": [5, 10, 20, 50]}
    assert spaces["prompt_tuning"]["lr"] == {"low": pytest.approx(3e-4), "high": pytest.approx(3e-2), "log": True}
    assert sum(entry.get("trial") is not None for entry in grid["waiting"]) == 4
    code, out, _ = run_cli("tune", suite, "--dry-run")  # one line per study, not one per trial
    studies = [line for line in out.splitlines() if line.startswith("(after tuning)")]
    assert code == 0 and len(studies) == len({(e["model"], e["task"], e["method_spec"], e["n_train"])
                                               for e in grid["waiting"]}) == 2
    assert all("2 trials on seed 0 (trial 0 at the defaults, then TPE over lr " in line for line in studies)


@pytest.mark.parametrize(("space", "message"), [
    ({"lora": {"rank": [4, 8]}}, "tune.space.lora: 'rank' is neither lr nor an option of lora"),
    ({"lora": {"r": {"low": 2, "high": 64}}}, "an option is searched over a list of its values"),
    ({"lora": {"lr": {"low": 1e-2, "high": 1e-1}}}, "leaves out its default 0.0003, which trial 0 runs"),
    ({"lora": {"r": [4, 16]}}, "leaves out its default r=8"),
    ({"lora": {"lr": {"low": 1e-3, "high": 1e-4}}}, "with 0 < A < B"),
    ({"lora": {"r": [4, "x"]}}, "bad value for 'r'"),
])
def test_a_bad_search_space_is_one_line_and_exit_2(tmp_path, space, message):
    suite = write_suite(tmp_path / "s.json", tune={"trials": 2, "space": space})
    code, out, err = run_cli("tune", suite, "--dry-run")
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_tune_refuses_a_suite_with_a_sweep(tmp_path):
    suite = write_suite(tmp_path / "s.json", sweep={"lr": [1e-3, 1e-4]})
    code, _, err = run_cli("tune", suite, "--dry-run")
    assert code == 2 and "remove the suite's sweep" in err


def test_every_methods_defaults_lie_in_its_own_axes():
    from peftbench.methods import METHODS

    for _, method in METHODS.items():
        defaults = method.options()
        for axis in method.tuning_axes:
            assert axis.contains(getattr(defaults, axis.name)), (method.name, axis)


def test_recommend_and_the_report_compare_tuned_methods_at_their_tuned_settings_and_say_so(tuned, tmp_path):
    import shutil

    suite, store, _ = tuned
    copy = tmp_path / "both.db"
    shutil.copy(store, copy)
    run_json("run", suite, "--store", copy, "--json")  # the untuned grid beside the studies, in the same blocks
    answer = run_json("recommend", "--store", copy, "--task-type", "classification", "--train-samples", "32",
                      "--json")
    assert sorted(choice["method"] for choice in answer["ranking"]) == ["ia3 (tuned)", "lora (tuned)"]
    assert any(note.startswith("Tuned methods are compared at their tuned settings") for note in answer["notes"])
    out = tmp_path / "report"
    run_json("report", "--store", copy, "--out", out, "--format", "md", "--json")
    text = (out / "report.md").read_text()
    assert "## Tuned against default: config:tiny-bert (random weights), bbc_topic, n=32" in text
    assert (out / "plots" / "sensitivity-config-tiny-bert-bbc-topic-n-32.png").stat().st_size > 10_000
    summary = text[text.index("## Summary"):text.index("## Scores")]
    picked = {line.split("|")[2].strip() for line in summary.splitlines() if line.startswith("| performance")}
    assert picked <= {"ia3 (tuned)", "lora (tuned)"}
