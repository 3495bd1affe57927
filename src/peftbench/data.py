"""Splits, scales, tokenisation and batching: identical for every method of a grid."""

import functools
import hashlib
import json
import random
from dataclasses import dataclass

import torch

from peftbench.errors import UserError
from peftbench.models import Family
from peftbench.tasks import Row, TaskData, TaskSpec

TEST_FRACTION = 0.2  # of the pool, when the task has no test split of its own
VAL_FRACTION = 0.1  # of what remains for training
PROMPT_TAIL_TOKENS = 16  # kept from the end of a truncated prompt: the cue ("Answer:") lives there
IGNORE = -100


@dataclass(frozen=True)
class Splits:
    """`train` is the whole training pool in a fixed order: a scale of N takes its first N rows, so
    smaller scales are prefixes of larger ones."""

    train: list[Row]
    val: list[Row]
    test: list[Row]

    def train_at(self, size: int) -> list[Row]:
        return self.train[:size]


def rows_digest(rows: list[Row]) -> str:
    """A short fingerprint of a set of rows, stored with each run to prove every method saw the same data."""
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:16]


def input_groups(task: TaskSpec, rows: list[Row]) -> list[list[Row]]:
    """Rows grouped by the model input they render to, in order of first appearance: an E2E meaning
    representation with each of its human references, an article that a dataset holds twice."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(task.prompt(row), []).append(row)
    return list(groups.values())


def split_sizes(task: TaskSpec, splits: Splits, n_train: int) -> dict[str, dict[str, int]]:
    """Rows and distinct inputs of the training rows a run uses, its validation and its test set (for E2E:
    references and meaning representations)."""
    chosen = {"train": splits.train_at(n_train), "val": splits.val, "test": splits.test}
    return {name: {"rows": len(rows), "inputs": len({task.prompt(row) for row in rows})}
            for name, rows in chosen.items()}


def _interleaved(groups: list[list[Row]]) -> list[Row]:
    """One row of every group, then the second of each, ...: a scale's first N rows hold as many distinct
    inputs as there are (with one row per input this is the groups' order)."""
    return [group[i] for i in range(max(map(len, groups), default=0)) for group in groups if i < len(group)]


def make_splits(task: TaskSpec, data: TaskData, split_seed: int, val_cap: int, test_cap: int) -> Splits:
    """Draw val/test once per (task, split seed): every method, scale and seed sees the same rows. Whole input
    groups are drawn, so an input (with all its references) lies in one split only, and the caps count inputs."""
    rng = random.Random(f"{task.name}/{split_seed}")
    pool = input_groups(task, data.train)
    rng.shuffle(pool)
    if data.test is None:
        n_test = min(test_cap, int(len(pool) * TEST_FRACTION))
        test, pool = pool[:n_test], pool[n_test:]
    else:
        test = input_groups(task, data.test)
        rng.shuffle(test)
        test = test[:test_cap]
    n_val = min(val_cap, int(len(pool) * VAL_FRACTION))
    val, train = pool[:n_val], pool[n_val:]
    if not test or not val or not train:
        raise UserError(f"task '{task.name}' has too few rows ({len(data.train)}) to draw train, validation and"
                        " test sets; provide at least 10 rows")
    # The test set is the distinct inputs: a generation input with all its references (scored together), a
    # classification input once (a repeated article would count twice).
    test_rows = [row for group in test for row in (group if task.kind == "generation" else group[:1])]
    return Splits(train=_interleaved(train), val=[row for group in val for row in group], test=test_rows)


def _truncate(ids: list[int], limit: int) -> list[int]:
    if len(ids) <= limit:
        return ids
    tail = min(PROMPT_TAIL_TOKENS, limit // 2)
    return ids[: limit - tail] + ids[len(ids) - tail:]


@dataclass(frozen=True)
class Encoder:
    """Turns rows into token ids for one model family. Classification with an encoder uses class indices;
    everything else is text-to-text with the label word (or the reference text) as the target."""

    task: TaskSpec
    family: Family
    tokenizer: object
    max_input_length: int
    max_target_length: int

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else self.tokenizer.sep_token_id

    @functools.cached_property
    def special_tokens(self) -> tuple[list[int], list[int]]:
        """(prefix, suffix): the ids the model's tokenizer puts around one sequence, read off by encoding a
        probe with and without them: OPT's `</s>` and Llama's `<s>` before, T5's `</s>` after, BERT's [CLS] and
        [SEP] around."""
        probe = "special tokens probe"
        bare = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
        full = self.tokenizer(probe)["input_ids"]
        start = next(i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare)
        return full[:start], full[start + len(bare):]

    def prompt_ids(self, row: Row) -> list[int]:
        """The prompt as the tokenizer encodes it, special tokens included, truncated in the middle so its cue
        survives. A decoder's prompt takes only the prefix: the answer continues it (decoder tokenizers add no
        suffix; a BERT stand-in tokenizer's [SEP] would end the text)."""
        ids = self.tokenizer(self.task.prompt(row), add_special_tokens=False)["input_ids"]
        prefix, suffix = self.special_tokens
        if self.family == "decoder":
            suffix = []
        return prefix + _truncate(ids, self.max_input_length - len(prefix) - len(suffix)) + suffix

    def target_ids(self, text: str) -> list[int]:
        """The answer, ended by EOS: the tokenizer's own suffix for an encoder-decoder (T5 appends `</s>` to
        targets as to inputs); for a decoder, EOS after the answer so that generation stops there."""
        # Decoder-only BPE tokenizers need the space that separates the cue from the answer.
        text = " " + text if self.family == "decoder" else text
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        end = self.special_tokens[1] if self.family == "seq2seq" and self.special_tokens[1] else [self.eos_id]
        return ids[: self.max_target_length - len(end)] + end

    def encode(self, row: Row) -> dict:
        prompt = self.prompt_ids(row)
        if self.family == "encoder":
            return {"input_ids": prompt, "label": self.task.labels.index(self.task.target(row))}
        target = self.target_ids(self.task.target(row))
        if self.family == "seq2seq":
            return {"input_ids": prompt, "labels": target}
        return {"input_ids": prompt + target, "labels": [IGNORE] * len(prompt) + target}


def collate(features: list[dict], pad_id: int, left_pad: bool = False) -> dict[str, torch.Tensor]:
    """Pad a list of encoded examples into tensors (left padding for decoder-only generation)."""
    width = max(len(f["input_ids"]) for f in features)

    def pad(values: list[int], fill: int, size: int) -> list[int]:
        padding = [fill] * (size - len(values))
        return padding + values if left_pad else values + padding

    batch = {
        "input_ids": torch.tensor([pad(f["input_ids"], pad_id, width) for f in features]),
        "attention_mask": torch.tensor([pad([1] * len(f["input_ids"]), 0, width) for f in features]),
    }
    if "label" in features[0]:
        batch["labels"] = torch.tensor([f["label"] for f in features])
    elif "labels" in features[0]:
        label_width = max(len(f["labels"]) for f in features)
        batch["labels"] = torch.tensor([pad(f["labels"], IGNORE, label_width) for f in features])
    return batch


GROUP_BATCHES = 32  # length grouping sorts within windows of this many batches, so batches stay random


def batch_order(lengths: list[int], batch_size: int, seed: int | None, group_by_length: bool = True) -> list[list[int]]:
    """Index batches over examples of the given lengths. Training (a seed): shuffled per seed; with
    length grouping, sorted by length inside random windows and the batches shuffled again, which cuts
    padding without making batch contents depend on anything but the seed. Evaluation (seed None): longest
    first when grouping, so padding is minimal; callers put results back in example order."""
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    if seed is not None:
        rng.shuffle(order)
    if group_by_length:
        window = batch_size * GROUP_BATCHES if seed is not None else len(order)
        order = [i for start in range(0, len(order), window)
                 for i in sorted(order[start:start + window], key=lambda i: -lengths[i])]
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    if seed is not None and group_by_length:
        rng.shuffle(batches)
    return batches


def count_tokens(batch: dict[str, torch.Tensor], family: Family) -> int:
    """Real (non-pad) tokens a step processes: inputs, plus decoder targets for encoder-decoders."""
    tokens = int(batch["attention_mask"].sum())
    if family == "seq2seq" and "labels" in batch:
        tokens += int((batch["labels"] != IGNORE).sum())
    return tokens
