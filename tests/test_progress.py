"""What `peftbench run` says while it works: the grid's size and what a resume skips, a line per finished
run, and per-run bars with steps, loss and an ETA; `report` and `profile` say what they do."""

import io

import pytest
import torch
from conftest import run_cli, write_suite
from rich.console import Console

from peftbench.progress import GridProgress
from peftbench.planning import Run
from peftbench.terminal import clock


def _run(method: str, seed: int = 0, kind: str = "train") -> Run:
    return Run({"model": "config:tiny-bert", "task": "bbc_topic", "method": method.split("[")[0], "method_spec": method,
                "n_train": 8, "seed": seed}, kind=kind)


def _progress() -> tuple[GridProgress, io.StringIO]:
    out = io.StringIO()
    return GridProgress(Console(file=out, width=80, force_terminal=False), bars=False), out


def test_lines_for_the_grid_and_each_finished_run(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("peftbench.progress.time.monotonic", lambda: clock[0])
    progress, out = _progress()
    runs = [_run("majority", kind="baseline"), _run("lora"), _run("ia3")]
    with progress:
        progress.start(runs, skipped=2, suite="demo")
        progress.step(runs[0], 0, None)
        progress.ended(runs[0], "finished", {"score": 0.25, "primary_metric": "accuracy", "wall_s": 1.0}, None)
        progress.step(runs[1], 0, None)
        clock[0] += 5
        progress.step(runs[1], 1, 10, 2.0)
        clock[0] += 9
        progress.step(runs[1], 4, 10, 1.2345)
        task = progress.progress.tasks[-1]
        assert task.fields["status"] == "4/10 steps · loss 1.234 · 0:14 · ETA 0:18"  # 3 steps took 9 s: 6 more
        clock[0] += 30
        progress.ended(runs[1], "finished", {"score": 0.875, "primary_metric": "accuracy", "wall_s": 44.0}, None)
        # one training run took 44 s: the one left (just started) needs about as long
        assert progress._grid_status() == "2/3 runs · 0:44 · ETA 0:44"
        progress.step(runs[2], 0, None)
        progress.ended(runs[2], "failed", {}, "DivergedError: training loss became nan")
    lines = out.getvalue().splitlines()
    assert lines[0] == "suite demo: 5 runs; 2 already in the store are skipped; 3 to run"
    assert "✓ 1/3 majority · bbc_topic · n=8 · seed 0: accuracy 0.250 in 0:01" in lines  # no model involved
    assert "✓ 2/3 lora · bbc_topic · n=8 · seed 0: accuracy 0.875 (random weights) in 0:44" in lines
    assert "✗ 3/3 ia3 · bbc_topic · n=8 · seed 0: failed (DivergedError: training loss became nan)" in lines
    assert any(line.startswith("→ 2/3 config:tiny-bert · bbc_topic · lora") for line in lines)


def test_the_eta_waits_for_a_training_run_before_guessing():
    progress, _ = _progress()
    runs = [_run("majority", kind="baseline"), _run("lora")]
    progress.start(runs, skipped=0, suite="demo")
    progress.ended(runs[0], "finished", {"score": 0.2, "primary_metric": "accuracy", "wall_s": 0.5}, None)
    assert progress._eta() is None and "ETA after the first run" in progress._grid_status()


def test_run_prints_a_line_per_run_and_a_resume_says_what_it_skips(tmp_path):
    suite = write_suite(tmp_path / "p.json", scales=[8], epochs=1)
    store = tmp_path / "r.db"
    code, out, err = run_cli("run", suite, "--store", store)
    assert code == 0, err
    assert "suite p: 2 runs; 2 to run" in err
    assert "✓ 1/2 majority · bbc_topic · n=8 · seed 0: accuracy" in err
    assert "✓ 2/2 lora · bbc_topic · n=8 · seed 0: accuracy" in err and "(random weights)" in err
    code, out, err = run_cli("run", suite, "--store", store)
    assert code == 0 and "suite p: 2 runs; 2 already in the store are skipped; 0 to run" in err
    assert "skipped 2 already stored" in out and "summary" in out


def test_report_says_what_it_does_and_names_the_page(grid_store, tmp_path):
    code, out, err = run_cli("report", "--store", grid_store, "--out", tmp_path / "r", "--format", "html")
    assert code == 0, err
    assert "building the summary and tables from" in err and "drawing the figures of 6" in err
    assert f"open {tmp_path / 'r' / 'report.html'} in a browser" in out


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_profile_says_which_method_it_measures(json_flag):
    code, out, err = run_cli("profile", "config:tiny-bert", "--method", "lora", "--steps", "1", "--warmup", "0",
                             "--no-reference", *json_flag)
    assert code == 0, err
    if json_flag:
        assert err == ""  # --json on a pipe: no chatter
    else:
        assert "profiling 1/1 lora in a fresh process" in err and "lora: ok in" in err


def test_every_phase_of_a_run_is_named_and_the_time_outside_the_run_is_recorded(monkeypatch, tmp_path):
    """A text-to-text run names its phases in order (the base model's loss, loading, its steps, generating,
    forgetting), and records the seconds its wall time leaves out; the progress line shows the phase and the
    run's line says what the run's time leaves out."""
    from peftbench import execution, forgetting
    from peftbench.config import Suite
    from peftbench.planning import Overrides, plan

    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(forgetting, "_BEFORE", {})
    suite = Suite(name="phases", models=["config:tiny-llama"], tasks=["bbc_topic"], methods=["lora"], scales=[8],
                  epochs=1, batch_size=4, baselines=[], max_input_length=32, max_target_length=4, val_cap=4,
                  test_cap=6)
    planned = plan(suite, Overrides())
    (run,) = planned.runs
    heard = []
    status, result, error = execution.execute_one(run, planned.tasks["bbc_topic"], planned.splits["bbc_topic"],
                                                  torch.device("cpu"), lambda *step, phase=None: heard.append(
                                                      phase or f"step {step[0]}/{step[1]}"))
    assert status == "finished", error
    assert heard == ["the base model's general-text loss (once per model, cached)", "loading model and data",
                     "step 1/2", "step 2/2", "generating for 6 test rows",
                     "the tuned model's general-text loss (forgetting)"]
    assert set(result["phase_seconds"]) == {"base_loss", "forgetting"}
    assert all(seconds > 0 for seconds in result["phase_seconds"].values())
    progress, out = _progress()
    with progress:
        progress.start([run], skipped=0, suite="phases")
        progress.step(run, 0, None)
        progress.step(run, None, None, None, "generating for 6 test rows")
        assert progress.progress.tasks[-1].fields["status"].startswith("generating for 6 test rows · ")
        progress.ended(run, "finished", {**result, "phase_seconds": {"converting": 75.0, "base_loss": 12.2,
                                                                    "forgetting": 0.2}}, None)
    assert out.getvalue().splitlines()[-1].endswith(
        f"in {clock(result['wall_s'])} (and one-time conversion 1:15, base model's loss 0:12)")
