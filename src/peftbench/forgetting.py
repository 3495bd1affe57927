"""Forgetting: what tuning for one task costs a text-to-text model on general text. It follows HF PEFT's
method_comparison (MetaMathQA/run.py, `calculate_mean_per_token_loss`): the mean cross-entropy per token on a
fixed held-out text, measured on the base model before training and on the tuned model after it; forgetting is
after minus before, so higher means more forgotten and a negative value means the tuned model models the text
better. "Before" is always the base model, measured on its own: a method that is not the identity at
initialisation (prompt tuning, a random adapter) would otherwise start from a worse loss and look as if it
forgot less (PEFT measures inside `disable_adapter()` for the same reason).

The text is the Lee corpus's 50 test documents (Lee, Pincombe & Welsh 2005, "An empirical evaluation of
models of text document similarity": Australian news articles of 2001), as gensim ships them in
`gensim/test/test_data/lee.cor`. No task of peftbench trains on it (BBC News is British and of 2004-05; the
reviews are Amazon's; the BBC tasks share its genre, news), and it is read from the installed package, never
downloaded. PEFT samples Wikipedia, which is not reachable offline; news prose is general text of the kind the
models were pre-trained on.

How the loss is read per family:
- decoder: every token of a document after the first predicted from the tokens before it, as PEFT does;
- seq2seq (T5): a prefix language model (Raffel et al. 2020, section 3.2.1): the encoder reads the first
  half of the document's tokens and the decoder is scored on the second half;
- encoder classification (BERT with a head) has no language-modelling output: not measured."""

import functools
import hashlib
import json
import os
from collections.abc import Callable
from importlib.metadata import version
from typing import TYPE_CHECKING

import torch

from peftbench.data import IGNORE, collate
from peftbench.evaluate import TaskModel, target_log_probs, to_device
from peftbench.models import cache_dir, weights_fingerprint
from peftbench.packages import package_dir
from peftbench.precision import autocast_dtype

if TYPE_CHECKING:
    from peftbench.runspec import ModelPart

CORPUS_FILE = ("gensim", "test/test_data/lee.cor")
CORPUS_INSTALL = "pip install --no-deps gensim==4.4.0"  # only the data file is read: none of gensim's dependencies
MAX_DOCUMENT_TOKENS = 256  # the longest document is 742 characters (~170 tokens): a guard, it truncates none
BATCH_SIZE = 4  # documents per forward pass: the logits over a 49k vocabulary are the largest tensor


@functools.cache
def general_text() -> tuple[tuple[str, ...], dict]:
    """The held-out documents and where they come from (package, version, file, sha256, documents)."""
    package, relative = CORPUS_FILE
    path = package_dir(package, CORPUS_INSTALL) / relative
    raw = path.read_bytes()
    documents = tuple(line.strip() for line in raw.decode("latin-1").splitlines() if line.strip())  # '£' is 0xa3
    source = {"corpus": "Lee et al. 2005 test documents", "package": f"{package} {version(package)}",
              "file": f"{package}/{relative}", "sha256": hashlib.sha256(raw).hexdigest(), "documents": len(documents)}
    return documents, source


def applies(family: str) -> bool:
    return family in ("decoder", "seq2seq")


def _examples(task_model: TaskModel) -> list[dict]:
    """Each document as an example scored like a training target (labels not IGNORE are scored)."""
    encoder = task_model.encoder
    prefix, suffix = encoder.special_tokens
    examples = []
    for document in general_text()[0]:
        ids = encoder.tokenizer(document, add_special_tokens=False)["input_ids"][:MAX_DOCUMENT_TOKENS]
        if encoder.family == "seq2seq":
            half = len(ids) // 2
            examples.append({"input_ids": prefix + ids[:half] + suffix, "labels": ids[half:]})
        else:  # the tokenizer's own start (Llama's <s>, OPT's </s>) gives the first token a context
            examples.append({"input_ids": prefix + ids, "labels": [IGNORE] * len(prefix) + ids})
    return examples


@torch.no_grad()
def general_loss(task_model: TaskModel) -> tuple[float, int]:
    """Mean cross-entropy per scored token of the general text (every token weighs the same, whatever its
    document's length), and the number of tokens scored."""
    task_model.model.eval()
    examples = sorted(_examples(task_model), key=lambda example: len(example["input_ids"]))
    total, tokens = 0.0, 0
    for start in range(0, len(examples), BATCH_SIZE):
        batch = to_device(collate(examples[start:start + BATCH_SIZE], task_model.pad_id), task_model.device)
        log_probs, scored = target_log_probs(task_model, batch)
        total -= float((log_probs * scored).sum())
        tokens += int(scored.sum())
    return total / tokens, tokens


_BEFORE: dict[str, tuple[float, int]] = {}  # the base model's loss per cache key, once per process


def _key(model: "ModelPart", device: torch.device) -> dict | None:
    """Everything the base model's general loss depends on: the weights (peftbench.models.weights_fingerprint),
    the dtype they are kept in and the one they compute in, the device, the text and how it is read, and the
    libraries; None when the weights cannot be identified without loading them."""
    weights = weights_fingerprint(model.name)
    if weights is None:
        return None
    compute = autocast_dtype(device, model.bf16_autocast, model.cpu_bf16)
    return {"model": model.name, "weights": weights, "weights_dtype": model.weights_dtype, "device": device.type,
            "autocast": str(compute), "text_sha256": general_text()[1]["sha256"],
            "max_document_tokens": MAX_DOCUMENT_TOKENS, "batch_size": BATCH_SIZE, "torch": torch.__version__,
            "transformers": version("transformers")}


def loss_before(model: "ModelPart", device: torch.device, build_base: Callable[[], TaskModel]) -> tuple[float, int]:
    """The base model's general loss, measured once per model and precision: every run of a grid on that model
    shares it, and so do later grids, through a file beside the converted models (`cache_dir()/models`) named by
    the digest of its key (`_key`), which it holds and which is checked on reading. A model whose weights are
    not identified before loading (a hub id not downloaded yet) is measured once per process. `build_base()`
    gives the frozen base task model on its device: it is built only when the loss is measured."""
    key = _key(model, device)
    digest = hashlib.sha256(json.dumps(key or [str(model), device.type], sort_keys=True).encode()).hexdigest()[:24]
    if digest in _BEFORE:
        return _BEFORE[digest]
    path = cache_dir() / "models" / f"general-loss-{digest}.json"
    try:
        stored = json.loads(path.read_text()) if key else None
    except (OSError, ValueError):
        stored = None
    if stored and stored.get("key") == key:
        _BEFORE[digest] = (stored["loss"], stored["tokens"])
        return _BEFORE[digest]
    base = build_base()
    _BEFORE[digest] = loss, tokens = general_loss(base)
    del base
    if key:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_suffix(f".{os.getpid()}.tmp")
            staging.write_text(json.dumps({"key": key, "loss": loss, "tokens": tokens}, indent=1))
            staging.replace(path)  # atomic: a concurrent runner never reads half a file
        except OSError:
            pass  # a read-only cache costs the measurement next time, nothing else
    return loss, tokens


def forgetting_fields(before: tuple[float, int], after: tuple[float, int]) -> dict:
    """The result row's fields: the two losses, their difference, and the text they were read on."""
    (loss_base, tokens), (loss_tuned, _) = before, after
    return {"forgetting": loss_tuned - loss_base, "general_loss_before": loss_base, "general_loss_after": loss_tuned,
            "general_text": {**general_text()[1], "tokens": tokens}}
