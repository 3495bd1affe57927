"""`peftbench profile`'s training measurement against a bare, hand-written PyTorch + PEFT step loop at
identical settings: the same model (a config: decoder, random init), method, batch shape, precision, warm-up
and timed steps, on the same synthetic token batches. Reports train tokens/s and peak memory of both
sides and their ratios (peftbench / bare).

Each measurement runs in a fresh process and the parent alternates the sides (bare, peftbench, bare, ...),
then reports medians with min-max (see /work/shared/MEASUREMENT.md). The peftbench side is exactly one
`peftbench profile` worker (peftbench.profile.measure): its model built by the runner, trained by
peftbench's training loop. Peak memory is read the same way on both sides: CUDA `max_memory_allocated`
after a reset once the model is built, or on CPU the growth of the peak resident set over the training
steps above the built model, both workers with the profile's fixed glibc mmap threshold.

    python benchmarks/profile_vs_bare.py                          # config:opt-125m, lora, 4 x (64+8), 3 repeats
    python benchmarks/profile_vs_bare.py --method full --batch-size 8 --seq-len 128 --json

This is a script that prints numbers, not a test. The bare worker uses peftbench only for the model's shape
(config_for), the synthetic batches and the memory reading; its loop is the one a user would write.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve()
sys.path.insert(0, str(SCRIPT.parent))
from bare_loop import _spread, _versions, run_worker  # noqa: E402  (the sibling benchmark's helpers)

LEARNING_RATES = {"lora": 3e-4, "full": 3e-5}  # peftbench's method defaults, which the profile uses
MAX_GRAD_NORM = 1.0


def _settings(args):
    from peftbench.profile import ProfileSettings

    return ProfileSettings(model=args.model, batch_size=args.batch_size, seq_len=args.seq_len,
                           target_len=args.target_len, steps=args.steps, warmup=args.warmup, dtype=args.dtype,
                           random_init=True, device=args.device)


def bare_worker(args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from peftbench.measure import PeakMemory, device_name
    from peftbench.models import config_for, offline_tokenizer
    from peftbench.profile import synthetic_examples

    device = torch.device(args.device)
    settings = _settings(args)
    config = config_for(args.model.removeprefix("config:"), offline_tokenizer())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    if args.method == "lora":
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16,
                                                 target_modules=["q_proj", "v_proj"]))
    model.to(device)
    memory = PeakMemory(device)
    memory.reset()
    baseline = 0 if device.type == "cuda" else memory.current_bytes()

    examples = synthetic_examples(settings, "decoder", config.vocab_size, max(args.steps, args.warmup) * args.batch_size)
    batches = []
    for start in range(0, len(examples), args.batch_size):
        chunk = examples[start:start + args.batch_size]
        input_ids = torch.tensor([e["input_ids"] for e in chunk])
        batches.append({"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                        "labels": torch.tensor([e["labels"] for e in chunk])})
    params = [p for p in model.parameters() if p.requires_grad]
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATES[args.method], **({"fused": True} if fused else
                                                                              {"foreach": True}))

    def step(batch) -> torch.Tensor:
        batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    model.train()
    for index in range(args.warmup):
        step(batches[index % len(batches)])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started, tokens = time.perf_counter(), 0
    for batch in batches[:args.steps]:
        tokens += int(batch["attention_mask"].sum())
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    peak, kind = memory.peak_bytes()
    if device.type != "cuda":
        peak, kind = peak - baseline, "cpu_peak_rss_growth"
    return {"side": "bare", "tokens_per_s": tokens / seconds, "peak_memory_bytes": peak, "peak_memory_kind": kind,
            "trainable_params": sum(p.numel() for p in params), "device": device_name(device)}


def peftbench_worker(args) -> dict:
    from peftbench.profile import measure

    result = measure(_settings(args), args.method)
    if result["status"] != "ok":
        raise SystemExit(f"peftbench profile worker: {result['status']}: {result.get('error')}")
    return {"side": "peftbench", "tokens_per_s": result["train_tokens_per_s"],
            "peak_memory_bytes": result["peak_memory_bytes"], "peak_memory_kind": result["peak_memory_kind"],
            "trainable_params": result["trainable_params"], "device": result["provenance"]["device"]}


def _measure(args, side: str) -> dict:
    argv = [sys.executable, str(SCRIPT), "--worker", side, "--model", args.model, "--method", args.method,
            "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len), "--target-len", str(args.target_len),
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--dtype", args.dtype, "--device", args.device]
    from peftbench.profile import worker_environment  # both sides: the allocator setting of the profile's workers

    return run_worker(argv, side, env=worker_environment())


def parent(args) -> None:
    measurements: dict[str, list[dict]] = {"bare": [], "peftbench": []}
    for repeat in range(args.repeats):
        for side in measurements:  # alternate: bare, peftbench, bare, peftbench, ...
            started = time.perf_counter()
            m = _measure(args, side)
            measurements[side].append(m)
            print(f"  repeat {repeat + 1}/{args.repeats} {side:9s} {m['tokens_per_s']:9.1f} tok/s"
                  f" {m['peak_memory_bytes'] / 2**20:8.1f} MiB ({time.perf_counter() - started:.0f} s wall)",
                  file=sys.stderr)
    bare, ours = measurements["bare"], measurements["peftbench"]
    summary = {"settings": {key: getattr(args, key) for key in ("model", "method", "batch_size", "seq_len",
                                                                 "target_len", "steps", "warmup", "dtype", "repeats")},
               "device": bare[0]["device"], "versions": _versions(), "peak_memory_kind": bare[0]["peak_memory_kind"],
               "trainable_params": {"bare": bare[0]["trainable_params"], "peftbench": ours[0]["trainable_params"]},
               "sides": {side: {"tokens_per_s": _spread([m["tokens_per_s"] for m in ms]),
                                "peak_memory_bytes": _spread([m["peak_memory_bytes"] for m in ms])}
                         for side, ms in measurements.items()},
               "ratios": {}}
    for field in ("tokens_per_s", "peak_memory_bytes"):
        pairwise = [o[field] / b[field] for o, b in zip(ours, bare, strict=True)]
        summary["ratios"][field] = {
            "ratio_of_medians": statistics.median(m[field] for m in ours) / statistics.median(m[field] for m in bare),
            "pairwise": _spread(pairwise)}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    s = summary["settings"]
    print(f"{s['model']} (random init) · {s['method']} · batch {s['batch_size']} x ({s['seq_len']}+{s['target_len']})"
          f" · {s['warmup']} warm-up + {s['steps']} timed steps · {s['dtype']} · {s['repeats']} repeats, fresh process each")
    print(f"device: {summary['device']} · " + " ".join(f"{k} {v}" for k, v in summary["versions"].items()))
    for side, values in summary["sides"].items():
        t, p = values["tokens_per_s"], values["peak_memory_bytes"]
        print(f"{side:10s} train tok/s median {t['median']:9.1f} (min-max {t['min']:.1f}-{t['max']:.1f})"
              f"   peak MiB median {p['median'] / 2**20:8.1f} (min-max {p['min'] / 2**20:.1f}-{p['max'] / 2**20:.1f})"
              f"   trainable {summary['trainable_params'][side]:,}")
    for field, ratio in summary["ratios"].items():
        pw = ratio["pairwise"]
        print(f"ratio peftbench/bare {field}: {ratio['ratio_of_medians']:.3f} (pairwise {pw['min']:.3f}-{pw['max']:.3f});"
              f" peak memory is {summary['peak_memory_kind']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="config:opt-125m", help="a config: decoder shape")
    parser.add_argument("--method", default="lora", choices=sorted(LEARNING_RATES))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--target-len", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", default=None, choices=["bf16", "fp32"], help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", choices=["bare", "peftbench"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    if not args.model.startswith("config:"):
        raise SystemExit("--model must be a config: decoder shape (random init on both sides)")
    if args.worker:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        result = bare_worker(args) if args.worker == "bare" else peftbench_worker(args)
        print(json.dumps(result), flush=True)
    else:
        parent(args)


if __name__ == "__main__":
    main()
