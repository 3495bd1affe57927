"""Tiny replicas of the built-in hub datasets and of half-precision checkpoints, in the real layouts.

Datasets go into a Hugging Face hub cache exactly as `snapshot_download` leaves one after peftbench's download
(`datasets--ORG--NAME/{blobs,refs,snapshots/<commit>,trees/<commit>.json}`, blobs named by git sha1 or, for LFS
files, sha256, snapshot files symlinked to them): the repositories' real file names, README `configs:` and
`dataset_info` (ClassLabel names, Value dtypes), columns, GLUE/SuperGLUE test labels of -1, the e2e main
revision holding only README.md and e2e_nlg.py beside its parquet export (refs/convert/parquet, folder
`default/`, a folder per split). Only the files matching a task's HubSource patterns are in the snapshot, as
after a real download; the tree listing names the rest. Run with HF_HUB_CACHE pointing there and
HF_HUB_OFFLINE=1, the real loaders read them as a user's cache.

Checkpoints are saved with `save_pretrained` in fp16 or bf16 (config `dtype` saying so), with tokenizers of
each family's real class built by the `tokenizers` library on the replicas' text: T5Tokenizer (Unigram,
appends `</s>`), GPT2Tokenizer as OPT ships it (byte-level BPE, `</s>` as BOS), LlamaTokenizer (BPE with
byte fallback, BOS `<s>`), and MiniLM's real BertTokenizer ([CLS] ... [SEP])."""

import hashlib
import io
import json
import os
from pathlib import Path

import pytest
import torch

from peftbench.models import CONFIG_SHAPES, _auto_class, offline_tokenizer
from peftbench.tasks.hub import HUB_SOURCES

ROWS = 40  # training rows per task: enough for scale 16 after validation is set aside

TOPICS = ["World", "Sports", "Business", "Sci/Tech"]
WORDS = ("market river team vote cloud engine league bank storm court city price goal chip treaty harbour"
         " election player museum oil rail bridge school garden").split()


def _sentence(i: int, n: int = 8) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(n)).capitalize() + "."


def _features(spec: dict):
    import datasets

    return datasets.Features({name: datasets.ClassLabel(names=kind) if isinstance(kind, list) else datasets.Value(kind)
                              for name, kind in spec.items()})


def _parquet(rows: list[dict], features: dict) -> bytes:
    import datasets

    buffer = io.BytesIO()
    datasets.Dataset.from_list(rows, features=_features(features)).to_parquet(buffer)
    return buffer.getvalue()


def _yaml_features(features: dict) -> str:
    lines = []
    for name, kind in features.items():
        if isinstance(kind, list):
            names = "".join(f"\n          '{i}': {label if label not in ('False', 'True') else repr(label)}"
                            for i, label in enumerate(kind))
            lines.append(f"  - name: {name}\n    dtype:\n      class_label:\n        names:{names}")
        else:
            lines.append(f"  - name: {name}\n    dtype: {kind}")
    return "\n".join(lines)


def _card(configs: dict[str, tuple[dict, dict[str, int], str]], title: str) -> bytes:
    """A README whose YAML declares `dataset_info` and `configs:` as the hub's converted cards do:
    config -> (features, rows per split, folder)."""
    info, entries = [], []
    for name, (features, splits, folder) in configs.items():
        split_lines = "".join(f"\n  - name: {split}\n    num_bytes: {count * 512}\n    num_examples: {count}"
                              for split, count in splits.items())
        info.append(f"- config_name: {name}\n  features:\n{_yaml_features(features)}\n  splits:{split_lines}")
        files = "".join(f"\n  - split: {split}\n    path: {folder}/{split}-*" for split in splits)
        entries.append(f"- config_name: {name}\n  data_files:{files}")
    return f"---\ndataset_info:\n{chr(10).join(info)}\nconfigs:\n{chr(10).join(entries)}\n---\n# {title}\n".encode()


def _labelled(make, count: int, labels: int, offset: int = 0, unlabelled: bool = False) -> list[dict]:
    return [{**make(offset + i), "label": -1 if unlabelled else (offset + i) % labels} for i in range(count)]


def _glue_like(configs: dict[str, tuple[dict, callable, int]]) -> dict[str, bytes]:
    """Files of a GLUE-style repository: one folder per config with train/validation/test parquet shards."""
    files, card = {}, {}
    for name, (features, make, labels) in configs.items():
        splits = {"train": _labelled(make, ROWS, labels), "validation": _labelled(make, 12, labels, offset=ROWS),
                  "test": _labelled(make, 8, labels, offset=ROWS + 12, unlabelled=True)}
        for split, rows in splits.items():
            files[f"{name}/{split}-00000-of-00001.parquet"] = _parquet(rows, features)
        card[name] = (features, {split: len(rows) for split, rows in splits.items()}, name)
    return {"README.md": _card(card, "replica"), **files}


def _e2e_rows(first_mr: int, mrs: int) -> list[dict]:
    """MRs repeated with two to four references each, in the order the E2E files list them."""
    rows = []
    for m in range(first_mr, first_mr + mrs):
        name, food, area = f"The {WORDS[m % len(WORDS)].capitalize()}", ["Italian", "French", "Chinese"][m % 3], \
            ["riverside", "city centre"][m % 2]
        mr = f"name[{name}], eatType[coffee shop], food[{food}], area[{area}]"
        for r in range(2 + m % 3):
            variants = [f"{name} is a coffee shop serving {food} food in the {area}.",
                        f"In the {area} there is a {food} coffee shop called {name}.",
                        f"{name} serves {food} food and is a coffee shop near the {area}.",
                        f"Try {name}, a {food} place in the {area}."]
            rows.append({"meaning_representation": mr, "human_reference": variants[r]})
    return rows


def dataset_repos() -> dict[tuple[str, str], dict[str, bytes]]:
    """(repository, revision) -> every file of that revision, path -> bytes."""
    boolq = {"question": "string", "passage": "string", "idx": "int32", "label": ["False", "True"]}
    rte = {"premise": "string", "hypothesis": "string", "idx": "int32", "label": ["entailment", "not_entailment"]}
    copa = {"premise": "string", "choice1": "string", "choice2": "string", "question": "string", "idx": "int32",
            "label": ["choice1", "choice2"]}
    cb = {"premise": "string", "hypothesis": "string", "idx": "int32", "label": ["entailment", "contradiction", "neutral"]}
    ax = {"premise": "string", "hypothesis": "string", "label": ["entailment", "neutral", "contradiction"], "idx": "int32"}
    cola = {"sentence": "string", "label": ["unacceptable", "acceptable"], "idx": "int32"}
    sst2 = {"sentence": "string", "label": ["negative", "positive"], "idx": "int32"}
    sentence_row = lambda i: {"sentence": _sentence(i), "idx": i}  # noqa: E731
    pair_row = lambda i: {"premise": _sentence(i), "hypothesis": _sentence(i + 3, 5), "idx": i}  # noqa: E731
    repos = {
        ("nyu-mll/glue", "main"): _glue_like({"ax": (ax, pair_row, 3), "cola": (cola, sentence_row, 2),
                                                         "sst2": (sst2, sentence_row, 2)}),
        ("aps/super_glue", "main"): _glue_like({
            "axb": (ax, pair_row, 3),
            "boolq": (boolq, lambda i: {"question": f"is the {WORDS[i % len(WORDS)]} open", "passage": _sentence(i, 20),
                                        "idx": i}, 2),
            "cb": (cb, pair_row, 3), "rte": (rte, pair_row, 2),
            "copa": (copa, lambda i: {"premise": _sentence(i, 6), "choice1": _sentence(i + 1, 4),
                                      "choice2": _sentence(i + 2, 4), "question": ["cause", "effect"][i % 2],
                                      "idx": i}, 2)}),
    }
    ag = {"text": "string", "label": TOPICS}
    ag_splits = {"train": _labelled(lambda i: {"text": _sentence(i, 12)}, ROWS, 4),
                 "test": _labelled(lambda i: {"text": _sentence(i, 12)}, 12, 4, offset=ROWS)}
    repos[("fancyzhx/ag_news", "main")] = {
        "README.md": _card({"default": (ag, {s: len(r) for s, r in ag_splits.items()}, "data")}, "AG News"),
        **{f"data/{split}-00000-of-00001.parquet": _parquet(rows, ag) for split, rows in ag_splits.items()}}
    cnn = {"article": "string", "highlights": "string", "id": "string"}
    article = lambda i: {"article": " ".join(_sentence(i + k, 10) for k in range(4)),  # noqa: E731
                         "highlights": _sentence(i, 6), "id": hashlib.sha1(str(i).encode()).hexdigest()}
    train = [article(i) for i in range(ROWS + 2)]
    cnn_files, card = {}, {}
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        for shard in range(3):
            cnn_files[f"{version}/train-{shard:05d}-of-00003.parquet"] = _parquet(train[shard::3], cnn)
        cnn_files[f"{version}/validation-00000-of-00001.parquet"] = _parquet([article(100 + i) for i in range(10)], cnn)
        cnn_files[f"{version}/test-00000-of-00001.parquet"] = _parquet([article(200 + i) for i in range(12)], cnn)
        card[version] = (cnn, {"train": len(train), "validation": 10, "test": 12}, version)
    repos[("abisee/cnn_dailymail", "main")] = {"README.md": _card(card, "CNN/DailyMail"), **cnn_files}
    samsum = {"README.md": b"---\nlanguage:\n- en\nlicense:\n- cc-by-nc-nd-4.0\ntask_categories:\n- summarization\n"
                           b"task_ids: []\npaperswithcode_id: samsum-corpus\npretty_name: SAMSum Corpus\ntags:\n"
                           b"- conversations-summarization\n---\n# Dataset Card for SAMSum Corpus\n"}
    for split, (start, count) in {"train": (0, ROWS), "validation": (ROWS, 10), "test": (ROWS + 10, 12)}.items():
        lines = ["id,dialogue,summary"] + [
            f'{13818513 + i},"Amanda: {_sentence(i, 5)}\r\nJerry: {_sentence(i + 1, 4)}","Amanda tells Jerry about'
            f' the {WORDS[i % len(WORDS)]}."' for i in range(start, start + count)]
        samsum[f"{split}.csv"] = ("\n".join(lines) + "\n").encode()
    repos[("knkarthick/samsum", "main")] = samsum
    e2e = {"meaning_representation": "string", "human_reference": "string"}
    e2e_splits = {"train": _e2e_rows(0, 14), "validation": _e2e_rows(14, 4), "test": _e2e_rows(18, 5)}
    split_info = "".join(f"\n  - name: {split}\n    num_bytes: {len(rows) * 256}\n    num_examples: {len(rows)}"
                         for split, rows in e2e_splits.items())
    repos[("tuetschek/e2e_nlg", "main")] = {
        ".gitattributes": b"*.bin filter=lfs diff=lfs merge=lfs -text\n",
        "README.md": f"---\npaperswithcode_id: e2e\npretty_name: End-to-End NLG Challenge\ndataset_info:\n  features:\n"
                     f"{_yaml_features(e2e)}\n  splits:{split_info}\n---\n# E2E\n".encode(),
        "e2e_nlg.py": b'"""E2E NLG Challenge dataset (loading script)."""\nimport datasets\n'}
    repos[("tuetschek/e2e_nlg", "refs/convert/parquet")] = {
        ".gitattributes": "".join(f"default/{split}/0000.parquet filter=lfs diff=lfs merge=lfs -text\n"
                                  for split in e2e_splits).encode(),
        **{f"default/{split}/0000.parquet": _parquet(rows, e2e) for split, rows in e2e_splits.items()}}
    return repos


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_repo(cache: Path, repo: str, revision: str, files: dict[str, bytes], keep, kind: str = "datasets") -> Path:
    """One revision of a repository (`kind` datasets or models) in the hub cache; `keep(path)` says which files
    were downloaded."""
    folder = cache / f"{kind}--{repo.replace('/', '--')}"
    commit = hashlib.sha1(f"replica {repo}@{revision}".encode()).hexdigest()
    tree = {}
    for path, data in files.items():
        lfs = path.endswith((".parquet", ".csv", ".safetensors"))
        entry = {"size": len(data), "blob_id": _git_blob_id(data)}
        if lfs:
            entry |= {"lfs_sha256": hashlib.sha256(data).hexdigest(), "lfs_size": len(data)}
        tree[path] = entry
        if not keep(path):
            continue
        blob = folder / "blobs" / (entry.get("lfs_sha256") or entry["blob_id"])
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / commit / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    ref = folder / "refs" / revision  # refs/main, or refs/refs/convert/parquet as huggingface_hub writes it
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    (folder / "trees").mkdir(exist_ok=True)
    (folder / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": tree}, indent=1))
    return folder / "snapshots" / commit


def build_hub_cache(cache: Path) -> Path:
    """Every replica, each snapshot holding what peftbench's download of it fetches (all files of a revision no
    task reads, such as e2e's script-only main, as an earlier download left them)."""
    from fnmatch import fnmatch

    wanted: dict[tuple[str, str], list[str]] = {}
    for source in HUB_SOURCES.values():
        wanted.setdefault((source.repo, source.revision), []).extend(source.allow_patterns)
    for (repo, revision), files in dataset_repos().items():
        patterns = wanted.get((repo, revision))
        write_repo(cache, repo, revision, files,
                   keep=lambda path, patterns=patterns: patterns is None or any(fnmatch(path, p) for p in patterns))
    return cache


FAMILIES = {"t5": "tiny-t5", "opt": "tiny-opt", "llama": "tiny-llama", "bert": "tiny-bert"}
HALF_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def _corpus() -> list[str]:
    """Text the replica tokenizers learn from: every prompt template, label word and replica row."""
    from peftbench.tasks.hub import HUB_TASKS

    text = [spec.template for spec in HUB_TASKS] + [word for spec in HUB_TASKS for word in spec.labels]
    text += [_sentence(i, 12) for i in range(len(WORDS))] + [row["human_reference"] for row in _e2e_rows(0, 23)]
    text += [row["meaning_representation"] for row in _e2e_rows(0, 23)]
    return text * 3


def _trained(model, trainer, pre_tokenizer) -> dict:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.train_from_iterator(_corpus(), trainer)
    return json.loads(tokenizer.to_str())["model"]


def _unigram_vocab() -> list[tuple[str, float]]:
    """A SentencePiece-style Unigram vocabulary: T5's <pad> </s> <unk> first, then a "▁word" piece per corpus word
    and single characters, scored by log frequency (built, not trained: the Unigram trainer is not deterministic)."""
    import math
    from collections import Counter

    words = Counter(f"▁{word}" for text in _corpus() for word in text.split())
    chars = Counter(char for text in _corpus() for char in text.replace(" ", "▁") if not char.isspace())
    pieces = [(piece, count) for piece, count in words.items() if count >= 1] + list(chars.items())
    total = sum(count for _, count in pieces)
    scored = sorted(((piece, math.log(count / total)) for piece, count in dict(pieces).items()), key=lambda p: (-p[1], p[0]))
    return [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *scored]


def build_tokenizer(family: str, folder: Path):
    """A tokenizer of the family's real transformers class, saved as `save_pretrained` writes it."""
    from tokenizers import models, pre_tokenizers, trainers
    from transformers import GPT2Tokenizer, LlamaTokenizer, T5Tokenizer

    if family == "bert":
        tokenizer = offline_tokenizer()  # MiniLM's real WordPiece files
    elif family == "t5":
        tokenizer = T5Tokenizer(vocab=_unigram_vocab(), extra_ids=100)
    elif family == "opt":
        # facebook/opt-*: GPT-2's byte-level BPE with <s> <pad> </s> <unk> first, and `</s>` as BOS (add_bos_token)
        trained = _trained(models.BPE(), trainers.BpeTrainer(
            vocab_size=600, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()), pre_tokenizers.ByteLevel(add_prefix_space=False))
        tokenizer = GPT2Tokenizer(vocab=trained["vocab"], merges=[tuple(m) for m in trained["merges"]],
                                  bos_token="</s>", eos_token="</s>", unk_token="</s>", pad_token="<pad>",
                                  add_bos_token=True)
    else:
        # Llama: SentencePiece BPE with byte fallback (<0x00>..<0xFF>), BOS <s> added, no EOS
        trained = _trained(models.BPE(byte_fallback=True, unk_token="<unk>"), trainers.BpeTrainer(
            vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True))
        tokenizer = LlamaTokenizer(vocab=trained["vocab"], merges=[tuple(m) for m in trained["merges"]],
                                   add_bos_token=True, add_eos_token=False)
    tokenizer.save_pretrained(folder)
    if family in ("opt", "llama"):  # as their hub tokenizer_config.json files say it
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        config.update(add_bos_token=True, **({"add_eos_token": False} if family == "llama" else {}))
        config_path.write_text(json.dumps(config, indent=2))
    return tokenizer


def build_checkpoint(family: str, dtype: str, folder: Path) -> Path:
    """A tiny random checkpoint of the family saved in fp16 or bf16, with its tokenizer files."""
    from transformers import AutoConfig

    tokenizer = build_tokenizer(family, folder)
    model_type, fields = CONFIG_SHAPES[FAMILIES[family]]
    ids = {"t5": dict(pad_token_id=0, eos_token_id=1, decoder_start_token_id=0),
           # the 2,048 positions of facebook/opt-125m and of the Llama 1 checkpoints
           "opt": dict(bos_token_id=2, eos_token_id=2, pad_token_id=1, max_position_embeddings=2048),
           "llama": dict(bos_token_id=1, eos_token_id=2, max_position_embeddings=2048),
           "bert": dict(pad_token_id=0)}[family]
    config = AutoConfig.for_model(model_type, **{**fields, "vocab_size": len(tokenizer), **ids})
    family_kind = "seq2seq" if family == "t5" else "encoder" if family == "bert" else "decoder"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _auto_class(family_kind).from_config(config)
    model.to(HALF_DTYPES[dtype]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def hub_cache() -> Path:
    """The session's hub cache (HF_HUB_CACHE, set offline by conftest) holding every dataset replica."""
    from huggingface_hub import constants

    cache = Path(os.environ["HF_HUB_CACHE"])
    assert Path(constants.HF_HUB_CACHE) == cache and constants.HF_HUB_OFFLINE, "huggingface_hub was imported too early"
    if not cache.exists():
        build_hub_cache(cache)
    return cache


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """FAMILY-DTYPE -> checkpoint directory, for every family in fp16 and in bf16."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {f"{family}-{dtype}": build_checkpoint(family, dtype, root / f"{family}-{dtype}")
            for family in FAMILIES for dtype in HALF_DTYPES}
