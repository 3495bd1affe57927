"""FLOPs per token and model FLOPs utilisation (MFU): how far a run is from what the hardware can do, the
number that tells a method slow by nature (more arithmetic) from one slow by implementation.

**FLOPs** are counted, not estimated from a formula: the method is applied to the model built on the meta
device (no memory, seconds even for T5-11B) and torch's `FlopCounterMode` counts every matrix product of one
training step (forward and backward) and of one forward pass over one sequence of the run's mean input and
target lengths (a matmul of m x k by k x n counts 2mkn). This is the standard count and reproduces its
textbook form: a forward pass costs 2N per token for the N weights of the linear layers a token passes
through, plus 4 x layers x keys x attention width for the attention scores and their weighted sum (PaLM,
Chowdhery et al. 2022, appendix B; nanoGPT's `estimate_mfu`; causal attention is counted in full, as there).
Training full-parameter costs 3x the forward pass (6N): backward computes the activation gradients (2N) and
the weight gradients (2N). **PEFT saves the weight gradients of frozen weights**: autograd computes only
activation gradients through them, so LoRA trains at about 4N + 6 x its own parameters per token, and
nothing at all is computed below the earliest layer that has a trainable tensor upstream of the loss (e.g.
`layers=later`). Embedding lookups and element-wise work (norms, activations, (IA)3's scaling) are not
FLOPs in this convention; the classification head of encoders (hidden x labels) is left out. Inference
FLOPs are those of a teacher-forced forward pass over input + target, which equals the matrix work of
KV-cached generation of the same target.

**Tokens** are the real (non-padding) tokens a run processes, as peftbench counts them everywhere:
inputs, plus the target for decoder-only (appended) and encoder-decoder models (the decoder's).

**MFU** = FLOPs per token x tokens/s / the device's peak FLOP/s in the run's compute dtype: on GPUs the dense
(no sparsity) peak of the vendor's datasheet; on CPUs the best of a short matrix-product probe in that dtype
with the run's threads, re-probed once per process, the best seen on the machine kept. A CPU's figure is
therefore relative to what torch's matmul reaches there, not to a theoretical peak; on a shared machine a
run can exceed a probe taken under load (an MFU above 1 says so)."""

import functools
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

# Dense peak TFLOP/s (bf16 tensor cores, plain fp32) from NVIDIA's datasheets, by a name fragment of
# torch.cuda.get_device_name(); the first fragment that matches wins, so specific names come first.
# None: the GPU has no bf16 arithmetic.
GPU_PEAK_TFLOPS = {
    "H100 PCIe": (756.5, 51.2),
    "H100": (989.4, 66.9),  # SXM
    "H200": (989.4, 66.9),
    "A100": (312.0, 19.5),
    "L40S": (362.1, 91.6),
    "A10G": (70.0, 31.2),
    "A10": (125.0, 31.2),
    "L4": (121.0, 30.3),
    "RTX 4090": (165.2, 82.6),
    "V100": (None, 15.7),
    "T4": (None, 8.1),
}
PROBE_SIZE = 1024  # square matrices: large enough for the vector units, quick on two cores
PROBE_SECONDS = 0.3  # per round; the best of three rounds is kept


def _forward_scalar(model: torch.nn.Module, family: str, input_len: int, target_len: int) -> torch.Tensor:
    """A forward pass over one meta sequence, reduced to a scalar to take a backward pass from. No attention
    mask: a meta tensor has no values for masking code to inspect, and a full sequence needs none."""
    with torch.device("meta"):
        if family == "encoder":
            return model(input_ids=torch.zeros(1, input_len, dtype=torch.long)).last_hidden_state.float().sum()
        if family == "seq2seq":
            return model(input_ids=torch.zeros(1, input_len, dtype=torch.long),
                         decoder_input_ids=torch.zeros(1, target_len, dtype=torch.long)).logits.float().sum()
        return model(input_ids=torch.zeros(1, input_len + target_len, dtype=torch.long)).logits.float().sum()


@functools.cache
def flops_per_token(model_name: str, method_spec: str, input_len: int, target_len: int, trains: bool = True,
                    seed: int = 0) -> dict:
    """FLOPs per real token of a training step ("train": forward + backward; None when nothing trains) and of a
    forward pass ("infer"), for a sequence of `input_len` input and `target_len` target tokens (the target is
    ignored for encoders)."""
    from peftbench.accounting import adapted_meta_model
    from peftbench.config import MethodSpec
    from peftbench.methods import METHODS

    reason = METHODS.get(MethodSpec.parse(method_spec).name).no_meta_forward
    if reason:
        return {"train": None, "infer": None, "input_len": input_len, "target_len": target_len,
                "counted_by": f"not counted: {reason}"}
    model, family, _, _, _ = adapted_meta_model(model_name, method_spec, seed)
    target_len = 0 if family == "encoder" else max(target_len, 1)
    tokens = input_len + target_len
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        _forward_scalar(model, family, input_len, target_len)
    forward = counter.get_total_flops()
    train = None
    if trains and any(p.requires_grad for p in model.parameters()):
        with FlopCounterMode(display=False) as counter:
            _forward_scalar(model, family, input_len, target_len).backward()
        train = counter.get_total_flops() / tokens
    return {"train": train, "infer": forward / tokens, "input_len": input_len, "target_len": target_len,
            "counted_by": "torch FlopCounterMode on the meta model"}


def _probe_cpu(dtype: torch.dtype) -> float:
    a = torch.randn(PROBE_SIZE, PROBE_SIZE, dtype=dtype)
    b = torch.randn(PROBE_SIZE, PROBE_SIZE, dtype=dtype)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(3):
        started, repeats = time.perf_counter(), 0
        while time.perf_counter() - started < PROBE_SECONDS:
            a @ b
            repeats += 1
        best = max(best, 2 * PROBE_SIZE**3 * repeats / (time.perf_counter() - started))
    return best


def peak_flops(device: torch.device, dtype: torch.dtype | None) -> dict | None:
    """The device's peak FLOP/s in the compute dtype (None for autocast-free float32), and where it comes
    from; None for a GPU missing from the datasheet table or without arithmetic in that dtype."""
    from peftbench.measure import device_name

    name = device_name(device)
    if device.type == "cuda":
        for fragment, (bf16, fp32) in GPU_PEAK_TFLOPS.items():
            if fragment in name:
                value = bf16 if dtype == torch.bfloat16 else fp32
                return None if value is None else {"flops_per_s": value * 1e12, "source": f"datasheet ({fragment})"}
        return None
    dtype_name = str(dtype or torch.float32).removeprefix("torch.")
    return {"flops_per_s": _cached_cpu_probe(name, dtype_name), "source": f"{dtype_name} matmul probe"}


@functools.cache
def _cached_cpu_probe(name: str, dtype: str) -> float:
    """The best probe of this CPU, thread count, torch and dtype seen so far, kept in peftbench's cache
    directory. Each process probes once and keeps the larger figure: a probe taken while other work shared
    the cores reads low (measured 43 against 102 GFLOP/s in bf16 on two cores) and, cached as it was, made
    later runs report an MFU above 1."""
    from peftbench.models import cache_dir

    path = cache_dir() / "peak-flops.json"
    key = f"{name} | torch {torch.__version__} | {dtype}"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    probed = _probe_cpu(getattr(torch, dtype))
    if probed > known.get(key, 0.0):
        known[key] = probed
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_suffix(f".{time.time_ns()}.tmp")
            staging.write_text(json.dumps(known, indent=1, sort_keys=True))
            staging.replace(path)  # atomic: concurrent runners never read half a file
        except OSError:
            pass  # an unwritable cache only means probing again next time
    return known[key]


def utilisation(flops: dict, train_tokens_per_s: float | None, infer_tokens_per_s: float | None,
                peak: dict | None) -> dict:
    """Achieved FLOP/s and MFU of training and inference."""
    def achieved(per_token, rate):
        return per_token * rate if per_token and rate else None

    train, infer = achieved(flops["train"], train_tokens_per_s), achieved(flops["infer"], infer_tokens_per_s)
    peak_value = peak["flops_per_s"] if peak else None
    return {"train_flops_per_s": train, "infer_flops_per_s": infer,
            "train_mfu": train / peak_value if train and peak_value else None,
            "infer_mfu": infer / peak_value if infer and peak_value else None,
            "peak_flops_per_s": peak_value, "peak_source": peak["source"] if peak else None}
