"""peftbench's speed-ups on real variable-length data, against what a user would write.

Training (`--part train`): end-to-end training tokens/s of peftbench (length grouping off and on) against the
bare hand-written PyTorch + PEFT loop, by running benchmarks/bare_loop.py --both (MiniLM-L6 on bbc_topic by
default) and reporting its ratios.

Evaluation (`--part eval`): seconds to label the test rows of a text-to-text classification task with a
decoder, three ways, each in a fresh process, alternated and repeated:
- `per_example`: one `generate` call per row with max_new_tokens = the suite's max_target_length, the loop
  a user would write (peftbench.evaluate.generate with batch size 1);
- `batched`: peftbench's evaluation (evaluate.evaluate): length-ordered batches of 2 x the training batch
  size, KV cache, max_new_tokens = the longest label, on the unmerged model;
- `batched_merged`: the same on merged weights (runner.merged_for_eval), as `peftbench run` evaluates.
The model is random init (no download; config:smollm2-135m by default) with LoRA at its identity start, so
generated texts rarely stop at EOS: the per-example loop runs to its cap, as an undertrained model does.

    python benchmarks/speedups.py --part eval
    python benchmarks/speedups.py --part train          # both print a JSON summary

This is a script that prints numbers, not a test.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve()
sys.path.insert(0, str(SCRIPT.parent))
from bare_loop import _spread, _versions, run_worker  # noqa: E402  (the sibling benchmark's helpers)

EVAL_SIDES = ("per_example", "batched", "batched_merged")


def eval_worker(args) -> dict:
    from peftbench.config import Suite
    from peftbench.evaluate import EVAL_BATCH_FACTOR, generate, match_label
    from peftbench.execution import build_task_model, merged_for_eval, pick_device
    from peftbench.measure import device_name
    from peftbench.planning import Overrides, plan
    from peftbench.runspec import RunSpec

    device = pick_device(args.device)
    suite = Suite(name="speedups", models=[args.model], tasks=[args.task], methods=[args.method], scales=[16],
                  batch_size=args.batch_size, max_input_length=args.max_input_length,
                  max_target_length=args.max_target_length, test_cap=args.rows, baselines=[])
    the_plan = plan(suite, Overrides())
    (run,) = the_plan.runs
    task, rows = the_plan.tasks[args.task], the_plan.splits[args.task].test
    task_model = build_task_model(RunSpec.load(run.spec), task)
    task_model.model.to(device)
    if args.worker == "per_example":
        evaluated, batch_size, max_new_tokens = task_model, 1, run.spec["max_target_length"]
    else:  # what evaluate.evaluate does for text-to-text classification in `peftbench run`
        evaluated = merged_for_eval(task_model, run.spec["method"]) if args.worker == "batched_merged" else task_model
        batch_size = run.spec["batch_size"] * EVAL_BATCH_FACTOR
        max_new_tokens = max(len(task_model.encoder.target_ids(label)) for label in task.labels)
    started = time.perf_counter()
    texts, _ = generate(evaluated, rows, batch_size, max_new_tokens)
    predictions = [match_label(text, task.labels) for text in texts]
    seconds = time.perf_counter() - started
    lengths = [len(task_model.encoder.prompt_ids(row)) for row in rows]
    return {"side": args.worker, "seconds": seconds, "rows": len(rows), "predictions": predictions,
            "prompt_tokens": {"min": min(lengths), "median": statistics.median(lengths), "max": max(lengths)},
            "device": device_name(device)}


def _eval_measure(args, side: str) -> dict:
    argv = [sys.executable, str(SCRIPT), "--part", "eval", "--worker", side, "--model", args.model, "--task", args.task,
            "--method", args.method, "--rows", str(args.rows), "--batch-size", str(args.batch_size),
            "--max-input-length", str(args.max_input_length), "--max-target-length", str(args.max_target_length),
            "--device", args.device]
    return run_worker(argv, side)


def eval_part(args) -> dict:
    measurements: dict[str, list[dict]] = {side: [] for side in EVAL_SIDES}
    for repeat in range(args.repeats):
        for side in EVAL_SIDES:  # alternated
            m = _eval_measure(args, side)
            measurements[side].append(m)
            print(f"  repeat {repeat + 1}/{args.repeats} {side:15s} {m['seconds']:8.2f} s", file=sys.stderr)
    first = measurements["per_example"][0]
    summary = {"part": "eval", "settings": {key: getattr(args, key) for key in (
        "model", "task", "method", "rows", "batch_size", "max_input_length", "max_target_length", "repeats")},
        "device": first["device"], "versions": _versions(), "prompt_tokens": first["prompt_tokens"],
        "seconds": {side: _spread([m["seconds"] for m in ms]) for side, ms in measurements.items()},
        "speedup_vs_per_example": {}, "prediction_agreement_with_per_example": {}}
    base = summary["seconds"]["per_example"]["median"]
    for side in EVAL_SIDES[1:]:
        summary["speedup_vs_per_example"][side] = base / summary["seconds"][side]["median"]
        ours = measurements[side][0]["predictions"]
        summary["prediction_agreement_with_per_example"][side] = sum(
            a == b for a, b in zip(ours, first["predictions"], strict=True)) / len(ours)
    return summary


def train_part(args) -> dict:
    argv = [sys.executable, str(SCRIPT.parent / "bare_loop.py"), "--both", "--json", "--model", args.train_model,
            "--task", args.train_task, "--method", args.method, "--n-train", str(args.n_train), "--epochs",
            str(args.epochs), "--batch-size", str(args.batch_size), "--max-length", str(args.max_input_length),
            "--repeats", str(args.repeats), "--device", args.device]
    process = subprocess.run(argv, check=False, capture_output=True, text=True)
    if process.returncode != 0:
        sys.stderr.write(process.stderr[-4000:])
        raise SystemExit(f"bare_loop.py failed with exit code {process.returncode}")
    return {"part": "train", **json.loads(process.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["train", "eval"], required=True)
    parser.add_argument("--model", default="config:smollm2-135m", help="decoder for the evaluation part")
    parser.add_argument("--task", default="bbc_topic", help="text-to-text classification task for evaluation")
    parser.add_argument("--train-model", default="offline:minilm-l6")
    parser.add_argument("--train-task", default="bbc_topic")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--rows", type=int, default=32, help="test rows evaluated")
    parser.add_argument("--n-train", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-input-length", type=int, default=128)
    parser.add_argument("--max-target-length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--worker", choices=EVAL_SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(eval_worker(args)), flush=True)
        return
    summary = eval_part(args) if args.part == "eval" else train_part(args)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
