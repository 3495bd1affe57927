"""The precision a run computes in. Weights, gradients and AdamW's states stay float32 everywhere (master
weights); the forward and backward passes run under bf16 autocast where the hardware computes bf16:

- CUDA: `bf16_autocast` (on by default);
- CPU: `cpu_bf16` = auto | on | off. `auto` (the default) autocasts only where the CPU multiplies bf16
  natively, which needs both the instructions (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo) and a oneDNN in
  torch that uses them (`torch.ops.mkldnn._is_mkldnn_bf16_supported()`); elsewhere bf16 is emulated and
  slower than float32, so `auto` stays float32. `on` autocasts regardless, `off` never.

The run's spec holds the policy; the run's provenance holds what it resolved to on the machine that ran it."""

import functools
from pathlib import Path
from typing import Literal

import torch

CpuBf16 = Literal["auto", "on", "off"]
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.cache
def cpu_bf16_support() -> dict:
    """Whether this CPU computes bf16 natively, and why (or why not)."""
    flags = sorted(_cpu_flags() & set(NATIVE_BF16_FLAGS))
    onednn = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    native = bool(flags) and onednn
    if native:
        reason = f"the CPU has {' and '.join(flags)} and torch's oneDNN uses them"
    elif not flags:
        reason = f"the CPU lacks {' and '.join(NATIVE_BF16_FLAGS)}: bf16 would be emulated"
    else:
        reason = f"the CPU has {' and '.join(flags)} but torch's oneDNN does not report bf16 support"
    return {"native": native, "flags": flags, "onednn_bf16": onednn, "reason": reason}


def autocast_dtype(device: torch.device, bf16_autocast: bool, cpu_bf16: CpuBf16) -> torch.dtype | None:
    """The autocast dtype of a run on `device` (None: float32 throughout)."""
    if device.type == "cuda":
        return torch.bfloat16 if bf16_autocast else None
    if cpu_bf16 == "on" or (cpu_bf16 == "auto" and cpu_bf16_support()["native"]):
        return torch.bfloat16
    return None


def describe(device: torch.device, bf16_autocast: bool, cpu_bf16: CpuBf16, weights: torch.dtype) -> dict:
    """What a run's provenance records about its precision."""
    dtype = autocast_dtype(device, bf16_autocast, cpu_bf16)
    record = {"weights": str(weights).removeprefix("torch."), "autocast": str(dtype).removeprefix("torch.") if dtype
              else None}
    if device.type == "cpu":
        record.update(cpu_bf16=cpu_bf16, cpu_bf16_native=cpu_bf16_support()["native"],
                      why=cpu_bf16_support()["reason"])
    return record
