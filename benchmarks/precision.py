"""fp32 against bf16 autocast (fp32 master weights) for each method family: train and inference tokens/s of
peftbench's own training step and forward pass, on real offline models, on the CPU (or a GPU).

Every measurement is one `peftbench profile` worker (peftbench.profile.measure) in a fresh process; the
parent alternates the precisions (fp32, bf16, fp32, ...) method by method and reports, per method, the
median with min-max over the repeats of each precision and the ratio of the medians (bf16 / fp32), as
/work/shared/MEASUREMENT.md asks. On CPU, bf16 is only worth it where the CPU computes it natively
(peftbench.precision.cpu_bf16_support, printed with the results).

    python benchmarks/precision.py                                       # MiniLM and SmolLM2, 3 repeats
    python benchmarks/precision.py --model offline:minilm-l6 --method lora --repeats 5 --json

A script that prints numbers, not a test.
"""

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bare_loop import _spread, _versions  # noqa: E402  (the sibling benchmark's helpers)

# One method of each family: full, reparametrisation (LoRA), scaling ((IA)3), selective (BitFit, LN tuning),
# additive adapters (Houlsby) and soft prompts (prompt tuning).
FAMILIES = ["full", "lora", "ia3", "bitfit[add_bias=true]", "ln_tuning", "houlsby", "prompt_tuning[tokens=20]"]
SHAPES = {"offline:minilm-l6": (16, 128, 8), "offline:smollm2-135m": (8, 128, 8)}  # batch, input, target


def _measure(settings, method: str) -> dict:
    from peftbench.profile import _measure_in_fresh_process

    entry = _measure_in_fresh_process(settings, method)
    if entry["status"] != "ok":
        raise SystemExit(f"{method} ({settings.dtype}) failed: {entry.get('error')}")
    return entry


def compare(model: str, methods: list[str], repeats: int, steps: int, warmup: int, device: str,
            shape: tuple[int, int, int]) -> list[dict]:
    from peftbench.profile import ProfileSettings

    batch, seq_len, target_len = shape
    base = ProfileSettings(model=model, batch_size=batch, seq_len=seq_len, target_len=target_len, steps=steps,
                           warmup=warmup, dtype="fp32", device=device)
    rows = []
    for method in methods:
        runs = {"fp32": [], "bf16": []}
        for _ in range(repeats):
            for dtype in ("fp32", "bf16"):  # alternated, so drift in the machine's speed hits both alike
                runs[dtype].append(_measure(dataclasses.replace(base, dtype=dtype), method))
        row = {"model": model, "method": method}
        for field in ("train_tokens_per_s", "infer_tokens_per_s"):
            spreads = {dtype: _spread([entry[field] for entry in entries]) for dtype, entries in runs.items()}
            row[field] = {**spreads, "bf16_over_fp32": spreads["bf16"]["median"] / spreads["fp32"]["median"]}
        row["train_mfu"] = {dtype: statistics.median(entry["train_mfu"] for entry in entries)
                            for dtype, entries in runs.items() if all(e.get("train_mfu") for e in entries)}
        rows.append(row)
        print(f"{model} {method}: train x{row['train_tokens_per_s']['bf16_over_fp32']:.2f},"
              f" inference x{row['infer_tokens_per_s']['bf16_over_fp32']:.2f}", file=sys.stderr)
    return rows


def _cell(spread: dict) -> str:
    return f"{spread['median']:,.0f} ({spread['min']:,.0f}-{spread['max']:,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="repeatable; default: MiniLM and SmolLM2")
    parser.add_argument("--method", action="append", help=f"repeatable; default: {', '.join(FAMILIES)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from peftbench.measure import device_name
    from peftbench.precision import cpu_bf16_support

    import torch

    rows = []
    for model in args.model or list(SHAPES):
        rows += compare(model, args.method or FAMILIES, args.repeats, args.steps, args.warmup, args.device,
                        SHAPES.get(model, (8, 128, 8)))
    header = {"device": device_name(torch.device(args.device)), "cpu_bf16": cpu_bf16_support(),
              "versions": _versions(), "repeats": args.repeats, "steps": args.steps, "warmup": args.warmup}
    if args.json:
        print(json.dumps({**header, "rows": rows}, indent=1))
        return
    print(f"{header['device']}; native bf16: {header['cpu_bf16']['native']} ({header['cpu_bf16']['reason']})")
    print(f"{args.repeats} repeats per precision, alternated, each a fresh process; {args.steps} timed steps after"
          f" {args.warmup} warm-up; medians (min-max)")
    print("| model | method | train tok/s fp32 | train tok/s bf16 | ratio | infer tok/s fp32 | infer tok/s bf16 |"
          " ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        train, infer = row["train_tokens_per_s"], row["infer_tokens_per_s"]
        print(f"| {row['model']} | {row['method']} | {_cell(train['fp32'])} | {_cell(train['bf16'])} |"
              f" {train['bf16_over_fp32']:.2f} | {_cell(infer['fp32'])} | {_cell(infer['bf16'])} |"
              f" {infer['bf16_over_fp32']:.2f} |")


if __name__ == "__main__":
    main()
