"""Parameter counts, peak memory and provenance recorded with every run."""

import ctypes
import functools
import gc
import hashlib
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from peftbench.identity import spec_hash

PACKAGES = ("peftbench", "torch", "transformers", "peft", "datasets", "tokenizers", "accelerate", "huggingface_hub",
            "safetensors", "numpy", "rouge_score", "scikit-learn")
# The pip constraints file `make install` installs from (see the Makefile); absent when peftbench was
# installed from a wheel rather than run from its checkout.
LOCK_FILE = Path(__file__).resolve().parents[2] / "requirements.lock"


def parameter_counts(model: nn.Module) -> dict[str, int]:
    parameters = list(model.parameters())
    return {"total_params": sum(p.numel() for p in parameters),
            "trainable_params": sum(p.numel() for p in parameters if p.requires_grad)}


def _release_free_heap() -> None:
    """Hand memory freed earlier back to the OS (glibc's malloc_trim), so that the resident set holds live
    memory only and later growth is not hidden by reuse of freed pages."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc


class PeakMemory:
    """Peak memory of one run: CUDA `max_memory_allocated`, or on CPU the process's peak resident set
    (VmHWM), reset at the start through /proc/self/clear_refs so earlier runs do not count."""

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _release_free_heap()
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass  # not Linux: the peak then covers the whole process

    def current_bytes(self) -> int:
        """What is held now: CUDA `memory_allocated`, or on CPU the resident set (VmRSS; 0 off Linux)."""
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def peak_bytes(self) -> tuple[int, str]:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device), "cuda_max_memory_allocated"
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "cpu_peak_rss"
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cpu_peak_rss_process"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"cpu: {line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"cpu: {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


@functools.cache
def _git_state() -> dict:
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
        return {"git_commit": commit, "git_dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _locked_versions(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep:
            pins[name.strip()] = version.strip()
    return pins


@functools.cache
def environment_lock(path: Path = LOCK_FILE) -> dict | None:
    """The lock file's sha256 and whether the installed packages are the locked versions: the hash alone
    would not tell an environment built from the lock from one that drifted (`make test-latest`, a pip
    upgrade). `differs` maps each locked package installed at another version (or not at all) to both."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    differs = {}
    for name, locked in _locked_versions(text).items():
        installed = _version(name)
        if installed != locked:
            differs[name] = {"locked": locked, "installed": installed}
    return {"file": path.name, "sha256": hashlib.sha256(text.encode()).hexdigest(), "matches": not differs,
            "differs": differs}


def provenance(device: torch.device, spec: dict) -> dict:
    return {
        "versions": {"python": sys.version.split()[0], **{name: _version(name) for name in PACKAGES}},
        "lock": environment_lock(),
        "device": device_name(device),
        "platform": platform.platform(),
        "config_hash": spec_hash(spec),
        **_git_state(),
    }
