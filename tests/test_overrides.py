"""Settings from the command line: `--set` for any suite key (validated like the YAML), `--name` and the
names of grids built from flags, the built-in suites (`suites`, `suites show`), a data file's columns and
test file from flags, and the dry run's time estimate."""

import json

import pytest
import yaml
from conftest import run_cli, run_json, write_suite

from peftbench.suite_files import builtin_suites, load_suite


def dry(*args) -> dict:
    return run_json("run", *args, "--dry-run", "--json")


def test_set_changes_any_key_as_the_yaml_would(tmp_path):
    suite = write_suite(tmp_path / "s.json")
    grid = dry(suite, "--set", "epochs=3", "--set", "batch_size=4", "--set", "learning_rates.lora=1e-3",
               "--set", "schedule.peak_factor=5", "--store", tmp_path / "none.db")
    [run] = [r for r in grid["runs"] if r["kind"] == "train"]
    assert (run["epochs"], run["batch_size"], run["lr"], run["peak_factor"]) == (3, 4, 1e-3, 5.0)
    assert run["peak_lr"] == pytest.approx(5e-3)  # the rate warm-up reaches is shown beside the starting one
    assert grid["suite"] == "s"  # settings change the configuration, not what the runs are filed under


@pytest.mark.parametrize("setting,message", [
    ("epoch=3", "--set epoch=3: unknown key 'epoch'. Did you mean 'epochs'?"),
    ("schedule.warmup=0.1", "--set schedule.warmup=0.1: unknown key 'schedule.warmup'. Did you mean 'warmup_ratio'?"),
    ("batch_size=big", "--set batch_size=big: bad value for 'batch_size'"),
    ("batch_size=0", "--set batch_size=0: bad value for 'batch_size'"),
    ("batch_size", "--set 'batch_size' must be KEY=VALUE"),
    ("methods=[lora[r=8]]", "the value is not valid YAML"),
    ("epochs.low=2", "'epochs' is 2, not a mapping; set it whole"),
])
def test_a_bad_setting_is_refused_in_one_line(tmp_path, setting, message):
    store = tmp_path / "r.db"
    code, out, err = run_cli("run", write_suite(tmp_path / "s.json"), "--set", setting, "--store", store)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and out == ""
    assert not store.exists()


def test_a_grid_from_flags_gets_a_name_from_its_axes_never_the_suites(tmp_path):
    store = ["--store", tmp_path / "none.db"]
    data = tmp_path / "my reviews.jsonl"
    data.write_text("".join(json.dumps({"text": f"t{i}", "label": "ab"[i % 2]}) + "\n" for i in range(30)))
    assert dry("--task", f"file:{data}", "--method", "lora", *store)["suite"] == "minilm-l6.my-reviews.lora.low"
    assert dry("--method", "lora", "--method", "ia3", *store)["suite"] == "quickstart"  # part of the quickstart
    assert dry("--method", "lora[r=4]", *store)["suite"] == "minilm-l6.bbc_topic+finefood_sentiment.lora.low"
    assert dry("--method", "lora[r=4]", "--name", "my study", *store)["suite"] == "my study"
    code, _, err = run_cli("run", "--name", "../x", "--dry-run")
    assert code == 2 and "--name: suite name '../x' must be a plain name" in err


def test_the_summary_lists_every_run_of_its_suite_and_stores_keep_their_own(tmp_path):
    a = write_suite(tmp_path / "s.json", scales=[8], epochs=1, seeds=[0])
    for seed in ("0", "1"):  # two calls add runs to one suite: its summary lists both
        code, _, err = run_cli("run", a, "--seed", seed, "--name", "study", "--store", tmp_path / "results.db")
        assert code == 0, err
    summary = (tmp_path / "study.md").read_text()
    runs = summary[summary.index("## All runs"):]
    assert runs.count("| bbc_topic | config:tiny-bert | lora |") == 2
    code, _, err = run_cli("run", a, "--name", "study", "--store", tmp_path / "other.db")
    assert code == 0, err
    assert (tmp_path / "study@other.md").exists() and (tmp_path / "study.md").read_text() == summary


def test_suites_lists_the_built_ins_and_shows_one_to_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run_cli("suites")
    assert code == 0, err
    for name in builtin_suites():
        assert name in out
    quickstart = next(line for line in out.splitlines() if line.startswith("quickstart "))
    assert quickstart.split()[1:3] == ["10", "1×2×5×1×1"]  # 1 model, 2 tasks, 5 methods, 1 scale, 1 seed
    lialin = next(line for line in out.splitlines() if line.startswith("lialin2024 "))
    assert lialin.split()[1:3] == ["675", "3×3×15×1×(3+2)"]  # 14 PEFT methods + full; 3 LRs on seed one, then 2 seeds
    code, shown, err = run_cli("suites", "show", "quickstart")
    assert code == 0 and shown == builtin_suites()["quickstart"].read_text()
    copy = tmp_path / "mine.yaml"
    copy.write_text(shown)
    assert load_suite(str(copy)).model_dump() == load_suite("quickstart").model_dump()
    assert yaml.safe_load(shown)["name"] == "quickstart"
    code, _, err = run_cli("suites", "show", "quikstart")
    assert code == 2 and "Did you mean 'quickstart'?" in err
    listed = run_json("suites", "--json")
    assert {entry["name"] for entry in listed} == set(builtin_suites())


def test_a_data_file_with_its_own_columns_and_test_file_from_flags(tmp_path):
    train, test = tmp_path / "reviews.jsonl", tmp_path / "held-out.jsonl"
    train.write_text("".join(json.dumps({"review": f"text {i}", "stars": "ab"[i % 2], "id": i}) + "\n" for i in range(40)))
    test.write_text("".join(json.dumps({"review": f"other {i}", "stars": "ab"[i % 2]}) + "\n" for i in range(6)))
    grid = dry("--task", f"file:{train}", "--test-file", test, "--text-field", "review", "--label-field", "stars",
               "--method", "lora", "--store", tmp_path / "none.db")
    [run] = [r for r in grid["runs"] if r["kind"] == "train"]
    assert run["task"] == f"file:{train}" and "text=review, label=stars" in run["task_source"]
    assert run["n_train"] == 36  # 40 rows less a tenth for validation; the test file is the test set
    code, _, err = run_cli("run", "--task", f"file:{train}", "--text-field", "body", "--dry-run")
    assert code == 2 and "has no column body (text_field)" in err and "'review'" in err
    code, _, err = run_cli("run", "--text-field", "review", "--dry-run")
    assert code == 2 and "add --task file:PATH" in err
    code, _, err = run_cli("run", "--task", str(train), "--dry-run")
    assert code == 2 and f"write file:{train}" in err


def test_the_dry_run_estimates_from_stored_runs_or_says_it_guesses(grid_store, tmp_path):
    from peftbench.store import read_rows

    suite = grid_store.parent / "classify.json"
    known = dry(suite, "--store", grid_store, "--seed", "7")  # the stored grid's models, a new seed
    estimate = known["estimate"]
    assert estimate["seconds"] > 0 and all("stored cpu run(s)" in line for line in estimate["basis"])
    # the estimate of a run is what its stored twin took: seconds per example-epoch and per evaluated row
    run = next(r for r in known["runs"] if r["kind"] == "train" and r["method_spec"] == "lora"
               and r["model"] == "config:tiny-bert" and r["n_train"] == 16)
    twins = [r for r in read_rows(grid_store) if r["kind"] == "train" and r["method_spec"] == "lora"
             and r["model"] == "config:tiny-bert" and r["task"] == "bbc_topic"]
    seconds = estimate["per_run_seconds"][known["runs"].index(run)]
    lowest = min(r["train_seconds"] / (r["n_train"] * len(r["curve"])) for r in twins) * 16 * run["epochs"]
    assert seconds >= lowest * 0.999
    fresh = dry(write_suite(tmp_path / "f.json", models=["config:tiny-llama"]), "--store", tmp_path / "none.db")
    assert "no stored cpu runs, so a heuristic" in fresh["estimate"]["basis"][0]
    assert fresh["estimate"]["seconds"] > 0
    code, out, _ = run_cli("run", suite, "--store", grid_store, "--dry-run")
    assert "already stored will be skipped" in out and "estimated time on cpu for 0 run(s)" in out
    assert "lr 3e-4 → 3e-3 → 3e-4" in out  # lora: the start, the peak after warm-up, the end


@pytest.mark.parametrize("written,expected", [("off", "off"), ("on", "on"), ("'off'", "off"), ("auto", "auto")])
def test_cpu_bf16_on_and_off_read_as_written_though_yaml_calls_them_booleans(tmp_path, written, expected):
    grid = dry(write_suite(tmp_path / "s.json"), "--set", f"cpu_bf16={written}", "--store", tmp_path / "none.db")
    assert {r["cpu_bf16"] for r in grid["runs"] if r["kind"] == "train"} == {expected}
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\nmodels: [config:tiny-bert]\ntasks: [bbc_topic]\nmethods: [lora]\ncpu_bf16: {written}\n")
    assert load_suite(str(path)).cpu_bf16 == expected


def test_method_overrides_replace_a_spec_on_the_models_named(tmp_path):
    """A paper that ran a method differently on one size (lialin2024's MAM on T5-11B): the replacement
    runs on that model only, and `--method` leaves nothing to replace without an error."""
    suite = write_suite(tmp_path / "s.json", models=["config:tiny-bert", "config:tiny-t5"], methods=["lora", "ia3"],
                        method_overrides={"config:tiny-t5": {"lora": "lora[r=4]"}})
    store = ["--store", tmp_path / "none.db"]
    ran = {(run["model"], run["method_spec"]) for run in dry(suite, *store)["runs"] if run["kind"] == "train"}
    assert ran == {("config:tiny-bert", "lora"), ("config:tiny-bert", "ia3"),
                   ("config:tiny-t5", "lora[r=4]"), ("config:tiny-t5", "ia3")}
    ran = {(run["model"], run["method_spec"]) for run in dry(suite, "--method", "ia3", *store)["runs"]
           if run["kind"] == "train"}
    assert ran == {("config:tiny-bert", "ia3"), ("config:tiny-t5", "ia3")}


def test_a_method_override_of_a_spec_the_suite_lacks_is_refused(tmp_path):
    suite = write_suite(tmp_path / "s.json", method_overrides={"config:tiny-bert": {"ia3": "ia3[layout=tfew]"}})
    code, out, err = run_cli("run", suite, "--store", tmp_path / "r.db")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "method_overrides for config:tiny-bert replaces ia3, which is not among the suite's methods (lora)" in err
    assert not (tmp_path / "r.db").exists()
