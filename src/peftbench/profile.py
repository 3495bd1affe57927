"""`peftbench profile`: memory and throughput of fine-tuning methods on synthetic batches of one shape.

Each method is measured in a fresh Python process (the first method measured in a process runs slow and
memory left by one method inflates the next one's peak: /work/shared/MEASUREMENT.md), built and adapted by
the code `peftbench run` uses (execution.build_task_model) and trained by its training loop (train.train), so
the profile measures what a run trains. Per method:

- training: W warm-up steps, then N timed steps (forward, backward, gradient clipping, AdamW step) on
  identical microbatches for every method; tokens/s is the real tokens of those steps over their time,
  read after a device synchronisation;
- inference: W warm-up and N timed forward passes without gradients over the same batches, giving the
  logits and the loss: the classification head's pass for encoders, and for decoders and encoder-decoders
  one teacher-forced pass over input + target (no generation loop, so every method does the same work);
  for methods with something to fold, again on merged weights (execution.merged_for_eval);
- peak memory: CUDA `max_memory_allocated` over the training steps, reset once the model is built; on CPU
  the growth of the process's peak resident set over those steps above the built model, so the figure is
  what training adds (activations, gradients, optimizer state), not the weights themselves (the worker
  runs with a fixed glibc mmap threshold, so that freed tensors leave the resident set).

Batches are random token ids: B sequences of L input tokens (plus T target tokens for text-to-text, which
a decoder sees appended to the input) and, for encoders, a two-class label, from a fixed seed.
"""

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SYNTHETIC_LABELS = 2
LOWEST_TOKEN_ID = 1000  # random ids start above the special tokens of the usual vocabularies


@dataclass(frozen=True)
class ProfileSettings:
    model: str
    batch_size: int = 8
    seq_len: int = 128
    target_len: int = 8
    steps: int = 10
    warmup: int = 3
    dtype: str = "fp32"  # bf16: bf16 autocast over fp32 weights (CUDA or CPU), as `peftbench run` trains
    random_init: bool = False
    device: str = "cpu"
    gradient_checkpointing: bool = False  # the suite key of the same name


def _synthetic_task():
    from peftbench.tasks import TaskData, TaskSpec

    return TaskSpec(name="synthetic", kind="classification", load=lambda: TaskData(train=[]), template="{text}",
                    target_field="label", primary_metric="accuracy", source="random token ids",
                    description="profiling batches", label_map={i: f"label{i}" for i in range(SYNTHETIC_LABELS)})


def synthetic_examples(settings: ProfileSettings, family: str, vocab_size: int, count: int) -> list[dict]:
    """`count` encoded examples of the profile's shape, the same for every method of a model."""
    import torch

    from peftbench.data import IGNORE

    generator = torch.Generator().manual_seed(0)
    low = min(LOWEST_TOKEN_ID, vocab_size // 2)

    def ids(length: int) -> list[int]:
        return torch.randint(low, vocab_size, (length,), generator=generator).tolist()

    examples = []
    for index in range(count):
        prompt = ids(settings.seq_len)
        if family == "encoder":
            examples.append({"input_ids": prompt, "label": index % SYNTHETIC_LABELS})
        elif family == "seq2seq":
            examples.append({"input_ids": prompt, "labels": ids(settings.target_len)})
        else:
            target = ids(settings.target_len)
            examples.append({"input_ids": prompt + target, "labels": [IGNORE] * len(prompt) + target})
    return examples


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inference_tokens_per_s(task_model, cpu_batches: list[dict], warmup: int) -> float:
    import time

    import torch

    from peftbench.data import count_tokens
    from peftbench.evaluate import autocast, batch_loss, to_device

    device, family = task_model.device, task_model.encoder.family
    task_model.model.eval()

    def forward(cpu_batch: dict) -> None:
        with torch.no_grad(), autocast(task_model):
            batch_loss(task_model, to_device(cpu_batch, device))

    for index in range(warmup):
        forward(cpu_batches[index % len(cpu_batches)])
    _synchronize(device)
    started, tokens = time.perf_counter(), 0
    for cpu_batch in cpu_batches:
        tokens += count_tokens(cpu_batch, family)
        forward(cpu_batch)
    _synchronize(device)
    return tokens / (time.perf_counter() - started)


def _is_out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def measure(settings: ProfileSettings, method_spec: str) -> dict:
    """Profile one method in this process (the parent calls it in a fresh one). An out-of-memory error
    becomes status `oom`, any other failure status `failed`, so the caller can go on."""
    try:
        return {"method": method_spec, "status": "ok", **_measure(settings, method_spec)}
    except Exception as error:  # reported per method, so the other methods go on
        status = "oom" if _is_out_of_memory(error) else "failed"
        return {"method": method_spec, "status": status, "error": f"{type(error).__name__}: {error}"[:500]}


def _measure(settings: ProfileSettings, method_spec: str) -> dict:
    import torch

    from peftbench.config import MethodSpec
    from peftbench.data import collate
    from peftbench.execution import build_task_model, merged_for_eval
    from peftbench.flops import flops_per_token, peak_flops, utilisation
    from peftbench.measure import PeakMemory, parameter_counts, provenance
    from peftbench.methods import METHODS
    from peftbench.runspec import single_run
    from peftbench.train import train

    device = torch.device(settings.device)
    name = MethodSpec.parse(method_spec).name
    batch_size = settings.batch_size
    spec = single_run(settings.model, method_spec, n_train=settings.steps * batch_size, batch_size=batch_size,
                      max_input_length=settings.seq_len, max_target_length=settings.target_len,
                      bf16=settings.dtype == "bf16", gradient_checkpointing=settings.gradient_checkpointing)
    task_model = build_task_model(spec, _synthetic_task(), random_init=settings.random_init)
    counts = parameter_counts(task_model.model)
    task_model.model.to(device)
    _synchronize(device)
    memory = PeakMemory(device)
    memory.reset()
    baseline = 0 if device.type == "cuda" else memory.current_bytes()

    backbone = task_model.model.backbone if task_model.uses_head else task_model.model
    vocab_size = backbone.get_input_embeddings().num_embeddings
    examples = synthetic_examples(settings, task_model.encoder.family, vocab_size,
                                  max(settings.steps, settings.warmup, 1) * batch_size)
    one_batch = examples[:batch_size]  # the validation set train() requires; its pass is not timed
    losses = []
    if settings.warmup:
        warm = train(task_model, examples[:settings.warmup * batch_size], one_batch, spec.train, spec.seed)
        losses.append(warm.curve[0]["train_loss"])
    timed = train(task_model, examples[:settings.steps * batch_size], one_batch, spec.train, spec.seed)
    losses.append(timed.curve[0]["train_loss"])
    peak, kind = memory.peak_bytes()
    if device.type != "cuda":
        peak, kind = peak - baseline, "cpu_peak_rss_growth"

    pad_id = task_model.pad_id
    cpu_batches = [collate(examples[start:start + batch_size], pad_id)
                   for start in range(0, settings.steps * batch_size, batch_size)]
    infer = _inference_tokens_per_s(task_model, cpu_batches, settings.warmup)
    merged_model = merged_for_eval(task_model, name)
    merged = _inference_tokens_per_s(merged_model, cpu_batches, settings.warmup) \
        if merged_model is not task_model else None
    train_tokens_per_s = timed.train_tokens / timed.train_seconds
    flops = flops_per_token(settings.model, method_spec, settings.seq_len, settings.target_len)
    return {**counts, "peak_memory_bytes": peak, "peak_memory_kind": kind, "flops": flops,
            **utilisation(flops, train_tokens_per_s, infer, peak_flops(device, task_model.autocast_dtype)),
            "train_tokens_per_s": train_tokens_per_s, "train_steps": timed.steps,
            "train_loss_warmup_then_timed": losses, "infer_tokens_per_s": infer,
            "infer_merged_tokens_per_s": merged, "mergeable": METHODS.get(name).mergeable,
            "provenance": provenance(device, dataclasses.asdict(settings))}


# ------------------------------------------------------------------------------------------------ parent

RELATIVE_FIELDS = ("peak_memory_bytes", "train_tokens_per_s", "infer_tokens_per_s", "infer_merged_tokens_per_s")


def default_dtype(device_type: str) -> str:
    """What `run` computes in on this device (precision.autocast_dtype with the suites' defaults): bf16 on
    CUDA and on CPUs that multiply bf16 natively, else fp32."""
    import torch

    from peftbench.precision import autocast_dtype

    return "bf16" if autocast_dtype(torch.device(device_type), True, "auto") else "fp32"


def check(settings: ProfileSettings, method_specs: list[str]) -> str:
    """Every input checked before anything is measured; a mistake raises UserError. Returns the model's
    architecture family."""
    from peftbench.accounting import count
    from peftbench.errors import UserError
    from peftbench.models import model_config, model_family

    for flag, value, least in (("--batch-size", settings.batch_size, 1), ("--seq-len", settings.seq_len, 1),
                               ("--target-len", settings.target_len, 1), ("--steps", settings.steps, 1),
                               ("--warmup", settings.warmup, 0)):
        if value < least:
            raise UserError(f"{flag} {value} is too small; use at least {least}")
    if settings.dtype not in ("bf16", "fp32"):
        raise UserError(f"--dtype {settings.dtype} is unknown; use bf16 or fp32")
    family = model_family(settings.model)
    positions = getattr(model_config(settings.model), "max_position_embeddings", None)
    length = settings.seq_len + (settings.target_len if family == "decoder" else 0)
    if family != "seq2seq" and positions and length > positions:
        raise UserError(f"{settings.model} takes at most {positions} positions but the batches are {length} tokens"
                        f" long; lower --seq-len{' / --target-len' if family == 'decoder' else ''}")
    if not method_specs:
        raise UserError("name at least one method to profile, e.g. --method lora")
    for spec in method_specs:
        count(settings.model, spec)  # unknown methods, bad options, methods that do not fit the model
    return family


# glibc raises its mmap threshold as large blocks are freed, after which freed tensors stay in the heap and
# the resident set no longer follows live memory (measured: 9-30% more peak RSS growth for the same LoRA
# steps on OPT-125M than a bare loop's). A fixed threshold keeps tensors mmapped and returned when freed.
CPU_ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def worker_environment() -> dict:
    """For a measuring child: it imports this same peftbench (installed or from a source tree), and on
    CPU its resident set follows live memory (CPU_ALLOCATOR_ENV)."""
    source = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    return {**CPU_ALLOCATOR_ENV, **os.environ, "PYTHONPATH": source + (os.pathsep + path if path else "")}


def _measure_in_fresh_process(settings: ProfileSettings, method_spec: str) -> dict:
    request = json.dumps({"settings": dataclasses.asdict(settings), "method": method_spec})
    done = subprocess.run([sys.executable, "-m", "peftbench.profile", request], capture_output=True, text=True,
                          env=worker_environment(), check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    # Killed by a signal (e.g. SIGKILL from the kernel's out-of-memory killer) shows as a negative code.
    status = "oom" if done.returncode == -9 else "failed"
    return {"method": method_spec, "status": status, "error": f"worker exited with code {done.returncode}: {last}"}


def reference_method() -> str:
    """The method the others are shown as percentages of: the one registered as the reference (full tuning)."""
    from peftbench.methods import METHODS

    return next(name for name, method in METHODS.items() if method.is_reference)


def profile(settings: ProfileSettings, method_specs: list[str], reference: bool = True,
            on_result: Callable[[dict], None] | None = None,
            on_start: Callable[[str, int, int], None] | None = None) -> dict:
    """Measure each method (full tuning first, as the 100% reference, unless `reference` is False) and
    return the settings, the provenance and one entry per method, with percentages of full tuning.
    `on_start(spec, index, count)` before each method, `on_result(entry)` after it."""
    from peftbench.config import MethodSpec

    specs = list(dict.fromkeys(str(MethodSpec.parse(text)) for text in method_specs))
    if reference:
        yardstick = reference_method()
        specs = [yardstick] + [spec for spec in specs if spec != yardstick]
    family = check(settings, specs)
    results = []
    for index, spec in enumerate(specs, 1):
        if on_start:
            on_start(spec, index, len(specs))
        result = _measure_in_fresh_process(settings, spec)
        results.append(result)
        if on_result:
            on_result(result)
    full = results[0] if reference and results[0]["status"] == "ok" else None
    for result in results:
        if full is None or result["status"] != "ok":
            result["pct_of_full"] = None
            continue
        # Merged inference is compared with full tuning's inference: full tuning has nothing to fold.
        result["pct_of_full"] = {
            field: None if result[field] is None else
            result[field] / full["infer_tokens_per_s" if field == "infer_merged_tokens_per_s" else field] * 100
            for field in RELATIVE_FIELDS}
    measured = next((r for r in results if r["status"] == "ok"), None)
    provenance = measured.pop("provenance") if measured else None
    for result in results:
        result.pop("provenance", None)
    return {"model": settings.model, "family": family, "device": provenance["device"] if provenance else settings.device,
            "dtype": "bf16 autocast, fp32 weights" if settings.dtype == "bf16" else "fp32",
            "settings": dataclasses.asdict(settings), "reference": reference_method() if reference else None,
            "versions": provenance["versions"] if provenance else None,
            "git_commit": provenance["git_commit"] if provenance else None, "methods": results}


def _worker_main() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    request = json.loads(sys.argv[1])
    result = measure(ProfileSettings(**request["settings"]), request["method"])
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    _worker_main()
