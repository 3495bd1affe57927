"""What equal-budget tuning costs (`peftbench tune`) against the untuned grid (`peftbench run`) of the same suite,
and what it changes: each in a fresh process on a fresh store, the untuned grid first.

Compute is given three ways: wall time of each command (machine-dependent: quote it with the machine and its
load), the summed run time of the training runs, and a load-independent count of work in example passes
(training examples x epochs x 3 for the forward and backward passes, validation rows x epochs, once more per
epoch for a trial's validation score, test rows once per tested run). Per block and method: the score of the
untuned run, of the study's defaults (the same computation: they must agree) and of its tuned setting, mean ± std
over the suite's seeds, and the study's trials.

    python benchmarks/tuning_cost.py                              # the quickstart, 8 trials per method
    python benchmarks/tuning_cost.py --seed 0 --seed 1 --seed 2   # three seeds: the tuned ranking with its spread
    python benchmarks/tuning_cost.py --suite my.yaml --trials 12 --out /tmp/cost --json

A script that prints numbers, not a test.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _command(verb: str, suite: str, store: Path, extra: list[str]) -> float:
    """Run `peftbench VERB` in a fresh process; its wall time in seconds."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "peftbench.cli", verb, suite, "--store", str(store), "--json",
                           *extra], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"peftbench {verb} failed: {done.stderr.strip()[-2000:]}")
    return time.perf_counter() - started


def _work(row: dict) -> float:
    """Example passes of one stored training run (see the module's docstring)."""
    curve = row.get("curve") or []
    sizes = row.get("data_sizes") or {}
    val_rows, test_rows = (sizes.get(split, {}).get("rows", 0) for split in ("val", "test"))
    scored_epochs = sum("val_score" in point for point in curve)
    tested = test_rows if row.get("stopped_by") != "pruned" else 0
    return 3 * row["n_train"] * len(curve) + val_rows * (len(curve) + scored_epochs) + tested


def _totals(rows: list[dict], wall: float) -> dict:
    trained = [row for row in rows if row["kind"] == "train" and row["status"] == "finished"]
    return {"command_wall_s": wall, "runs": len(trained), "run_seconds": sum(row["wall_s"] for row in trained),
            "epochs": sum(len(row.get("curve") or []) for row in trained),
            "example_passes": sum(map(_work, trained))}


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def measure(suite: str, trials: int, seeds: list[int], out: Path) -> dict:
    from peftbench.api import results
    from peftbench.recording import complete
    from peftbench.tuning.summary import summaries

    out.mkdir(parents=True, exist_ok=True)
    untuned_store, tuned_store = out / "untuned.db", out / "tuned.db"
    for store in (untuned_store, tuned_store):
        store.unlink(missing_ok=True)
    seed_flags = [flag for seed in seeds for flag in ("--seed", str(seed))]
    untuned_wall = _command("run", suite, untuned_store, seed_flags)
    tuned_wall = _command("tune", suite, tuned_store, [*seed_flags, "--trials", str(trials)])
    untuned, tuned = results(untuned_store), complete(results(tuned_store))
    blocks = []
    for study in summaries(tuned):
        plain = [row["score"] for row in untuned if row["kind"] == "train" and row["status"] == "finished"
                 and (row["model"], row["task"], row["n_train"], row["method_spec"]) ==
                 (study.model, study.task, study.n_train, study.method)]
        blocks.append({"model": study.model, "task": study.task, "n_train": study.n_train, "method": study.method,
                       "trials": study.trials, "untuned": _spread(plain) if plain else None,
                       "default": study.default and study.default.score and vars(study.default.score),
                       "tuned": study.tuned and study.tuned.score and vars(study.tuned.score),
                       "best": study.tuned and study.tuned.params, "cost_ratio": study.cost_ratio})
    totals = {"untuned": _totals(untuned, untuned_wall), "tuned": _totals(tuned, tuned_wall)}
    ratios = {key: totals["tuned"][key] / totals["untuned"][key]
              for key in ("command_wall_s", "run_seconds", "epochs", "example_passes")}
    return {"suite": suite, "trials": trials, "seeds": seeds, "totals": totals, "ratios": ratios, "blocks": blocks,
            "machine": {"cpus": os.cpu_count(), "load_after": os.getloadavg()}}


def _score(entry: dict | None) -> str:
    if not entry:
        return "–"
    return f"{entry['mean']:.3f}" + (f" ± {entry['std']:.3f}" if entry.get("std") is not None else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="quickstart")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--seed", type=int, action="append", dest="seeds")
    parser.add_argument("--out", type=Path, default=Path("/tmp/peftbench-tuning-cost"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.suite, args.trials, args.seeds or [0], args.out)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.suite}, {args.trials} trials per method, seeds {result['seeds']}:")
    print(f"{'task':20} {'method':10} {'untuned':>15} {'default':>15} {'tuned':>15}  trials        best")
    for block in result["blocks"]:
        trials = ", ".join(f"{n} {state}" for state, n in block["trials"].items())
        best = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in (block["best"] or {}).items())
        print(f"{block['task']:20} {block['method']:10} {_score(block['untuned']):>15} {_score(block['default']):>15}"
              f" {_score(block['tuned']):>15}  {trials:13} {best}")
    for name, total in result["totals"].items():
        print(f"{name:8} command {total['command_wall_s']:7.0f} s, runs {total['run_seconds']:7.0f} s, "
              f"{total['runs']} runs, {total['epochs']} epochs, {total['example_passes']:,.0f} example passes")
    print("tuned / untuned: " + ", ".join(f"{key} {value:.2f}x" for key, value in result["ratios"].items()))
    print(f"machine: {result['machine']['cpus']} CPUs, load average after {result['machine']['load_after']}")


if __name__ == "__main__":
    main()
