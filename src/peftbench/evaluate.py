"""Scoring: losses, label predictions (classification head, generated label word, or ranked label),
generated text, and the metrics of the papers."""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from peftbench.data import IGNORE, Encoder, batch_order, collate, input_groups
from peftbench.interrupts import check_stop
from peftbench.precision import CpuBf16, autocast_dtype
from peftbench.run_facts import OTHER
from peftbench.tasks import Row

EVAL_BATCH_FACTOR = 2  # evaluation holds no gradients, so it can take larger batches

@dataclass
class TaskModel:
    """A model made ready for one task: `uses_head` when an encoder classifies through MeanPoolClassifier."""

    model: nn.Module
    encoder: Encoder
    uses_head: bool
    group_by_length: bool = True
    bf16_autocast: bool = True  # bf16 autocast over fp32 weights on CUDA (peftbench.precision)
    cpu_bf16: CpuBf16 = "off"  # on CPU: auto (where bf16 is native), on or off; a run takes its suite's setting
    method_record: dict = field(default_factory=dict)  # what the method chose, e.g. the layers of `random`
    base_tensor_ids: frozenset[int] = frozenset()  # the loaded model's own parameters and buffers, before the method
    on_optimizer_step: Callable[[int], None] | None = None  # the method's per-step hook, bound to its model
    # A trained tensor's learning rate as a multiple of the run's (Method.learning_rate_factors); None: 1 for all
    learning_rate_factor: Callable[[str, nn.Parameter], float] | None = None

    @property
    def pad_id(self) -> int:
        return self.encoder.tokenizer.pad_token_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return autocast_dtype(self.device, self.bf16_autocast, self.cpu_bf16)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def head_loss(task_model: TaskModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A classification head's mean loss over the batch and the logits it was read from."""
    logits = task_model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return nn.functional.cross_entropy(logits.float(), batch["labels"]), logits


def batch_loss(task_model: TaskModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    if task_model.uses_head:
        return head_loss(task_model, batch)[0]
    return task_model.model(**batch).loss


def autocast(task_model: TaskModel):
    """Autocast for the task model's passes, in the dtype its device and settings call for (none: float32)."""
    dtype = task_model.autocast_dtype
    return torch.autocast(task_model.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def _loss_batches(task_model: TaskModel, examples: list[dict], batch_size: int):
    """(example indices, padded batch on the device) of a loss pass, longest first."""
    lengths = [len(example["input_ids"]) for example in examples]
    for indices in batch_order(lengths, batch_size, seed=None, group_by_length=task_model.group_by_length):
        check_stop("during validation")
        yield indices, to_device(collate([examples[i] for i in indices], task_model.pad_id), task_model.device)


@torch.no_grad()
def mean_loss(task_model: TaskModel, examples: list[dict], batch_size: int) -> float:
    """Example-weighted mean loss over a set (the validation loss used for early stopping)."""
    task_model.model.eval()
    total = 0.0
    for indices, batch in _loss_batches(task_model, examples, batch_size):
        with autocast(task_model):
            total += float(batch_loss(task_model, batch)) * len(indices)
    return total / max(len(examples), 1)


@dataclass(frozen=True)
class Scoring:
    """What a validation pass needs to score its examples as well: the rows they encode (`rows[i]` is
    `examples[i]`), the evaluation mode and the longest target (as `evaluate` takes them)."""

    rows: list[Row]
    mode: Literal["generate", "rank"]
    max_target_length: int


@torch.no_grad()
def validation(task_model: TaskModel, examples: list[dict], batch_size: int,
               scoring: Scoring | None = None) -> tuple[float, dict | None]:
    """The validation loss (as `mean_loss`) and, with `scoring`, the metrics (as `evaluate`) of the same set.
    A classification head gives both from one forward pass per batch: the logits the loss is read from are
    the predictions'. A text-to-text model answers by generating or ranking, which the teacher-forced loss
    pass does not give, so it takes its own pass."""
    if scoring is None:
        return mean_loss(task_model, examples, batch_size), None
    if not task_model.uses_head:
        metrics, _ = evaluate(task_model, scoring.rows, batch_size * EVAL_BATCH_FACTOR, scoring.mode,
                              scoring.max_target_length)
        return mean_loss(task_model, examples, batch_size), metrics
    task_model.model.eval()
    labels = task_model.encoder.task.labels
    total, predictions = 0.0, [""] * len(examples)
    for indices, batch in _loss_batches(task_model, examples, batch_size):
        with autocast(task_model):
            loss, logits = head_loss(task_model, batch)
        total += float(loss) * len(indices)
        for index, label in zip(indices, logits.argmax(-1).tolist()):
            predictions[index] = labels[label]
    golds = [labels[example["label"]] for example in examples]
    return total / max(len(examples), 1), classification_metrics(golds, predictions, labels)


def _prompt_batches(task_model: TaskModel, rows: list[Row], batch_size: int):
    """(row indices, padded prompt batch) pairs; results must be put back by index."""
    left_pad = task_model.encoder.family == "decoder"
    prompts = [task_model.encoder.prompt_ids(row) for row in rows]
    lengths = [len(prompt) for prompt in prompts]
    for indices in batch_order(lengths, batch_size, seed=None, group_by_length=task_model.group_by_length):
        check_stop("during evaluation")
        features = [{"input_ids": prompts[i]} for i in indices]
        yield indices, to_device(collate(features, task_model.pad_id, left_pad=left_pad), task_model.device)


@torch.no_grad()
def generate(task_model: TaskModel, rows: list[Row], batch_size: int, max_new_tokens: int) -> tuple[list[str], int]:
    """Greedy generation with the KV cache, batched; returns the texts and the tokens processed."""
    task_model.model.eval()
    tokenizer = task_model.encoder.tokenizer
    texts, tokens = [""] * len(rows), 0
    for indices, batch in _prompt_batches(task_model, rows, batch_size):
        with autocast(task_model):
            output = task_model.model.generate(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=max_new_tokens,
                do_sample=False, num_beams=1, eos_token_id=task_model.encoder.eos_id, pad_token_id=task_model.pad_id)
        if task_model.encoder.family == "decoder":
            output = output[:, batch["input_ids"].shape[1]:]
        for index, text in zip(indices, tokenizer.batch_decode(output, skip_special_tokens=True)):
            texts[index] = text
        tokens += int(batch["attention_mask"].sum()) + int((output != task_model.pad_id).sum())
    return [text.strip() for text in texts], tokens


def match_label(text: str, labels: list[str]) -> str:
    """The label a generated answer names, ignoring case, surrounding whitespace and trailing
    punctuation on its first line; OTHER when it names none."""
    first_line = text.strip().split("\n", 1)[0] if text.strip() else ""
    answer = "".join(first_line.lower().rstrip(".!,;:").split())
    by_key = {"".join(label.lower().split()): label for label in labels}
    return by_key.get(answer, OTHER)


@torch.no_grad()
def predict_with_head(task_model: TaskModel, rows: list[Row], batch_size: int) -> tuple[list[str], int]:
    task_model.model.eval()
    labels = task_model.encoder.task.labels
    predictions, tokens = [""] * len(rows), 0
    for indices, batch in _prompt_batches(task_model, rows, batch_size):
        with autocast(task_model):
            logits = task_model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        for index, label in zip(indices, logits.argmax(-1).tolist()):
            predictions[index] = labels[label]
        tokens += int(batch["attention_mask"].sum())
    return predictions, tokens


def target_log_probs(task_model: TaskModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-probability the model gives each label token of a batch, and which positions are labels (not
    IGNORE): a decoder's logits shifted onto the tokens they predict, and positions that prompt tuning prepends
    dropped."""
    with autocast(task_model):
        logits = task_model.model(**batch).logits.float()
    targets = batch["labels"]
    if task_model.encoder.family == "decoder":
        logits, targets = logits[:, :-1], targets[:, 1:]
    logits = logits[:, -targets.shape[1]:]  # prompt tuning prepends virtual positions
    picked = logits.log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked, targets != IGNORE


@torch.no_grad()
def predict_by_rank(task_model: TaskModel, rows: list[Row], batch_size: int) -> tuple[list[str], int]:
    """Pick the label whose tokens the model finds most likely after the prompt (summed log-probability)."""
    task_model.model.eval()
    encoder, labels = task_model.encoder, task_model.encoder.task.labels
    candidates = []
    for row in rows:
        prompt = encoder.prompt_ids(row)
        for label in labels:
            target = encoder.target_ids(label)
            if encoder.family == "seq2seq":
                candidates.append({"input_ids": prompt, "labels": target})
            else:
                candidates.append({"input_ids": prompt + target, "labels": [IGNORE] * len(prompt) + target})
    scores, tokens = [0.0] * len(candidates), 0
    lengths = [len(candidate["input_ids"]) for candidate in candidates]
    for indices in batch_order(lengths, batch_size, seed=None, group_by_length=task_model.group_by_length):
        check_stop("during evaluation")
        batch = to_device(collate([candidates[i] for i in indices], task_model.pad_id), task_model.device)
        picked, mask = target_log_probs(task_model, batch)
        for index, score in zip(indices, (picked * mask).sum(-1).tolist()):
            scores[index] = score
        tokens += int(batch["attention_mask"].sum())
    per_row = torch.tensor(scores).view(len(rows), len(labels))
    return [labels[i] for i in per_row.argmax(-1).tolist()], tokens


def classification_metrics(golds: list[str], predictions: list[str], labels: list[str]) -> dict:
    from sklearn.metrics import f1_score, matthews_corrcoef

    correct = [gold == prediction for gold, prediction in zip(golds, predictions)]
    recalls = [sum(c for g, c in zip(golds, correct) if g == label) / golds.count(label)
               for label in labels if label in golds]
    counts = Counter(predictions)
    return {
        "accuracy": sum(correct) / len(golds),
        "balanced_accuracy": sum(recalls) / len(recalls),
        "macro_f1": float(f1_score(golds, predictions, labels=labels, average="macro", zero_division=0)),
        "mcc": float(matthews_corrcoef(golds, predictions)),
        "other_rate": counts.get(OTHER, 0) / len(predictions),
        "prediction_counts": {label: counts.get(label, 0) for label in [*labels, OTHER]},
        "n_test": len(golds),
        # 0/1 per test row, in test order: the report's paired bootstrap compares methods on the same rows
        "per_example": [int(c) for c in correct],
    }


def generation_metrics(references: list[list[str]], predictions: list[str]) -> dict:
    """ROUGE-1/2/L F1 (rouge_score with the Porter stemmer, as Pu et al.'s ROUGE-L) of each prediction
    against all references of its input, taking the best reference per input and metric (rouge_score's
    `score_multi`: max over references). With one reference per input this is the plain per-example score,
    and a prediction equal to any one reference scores 1.0. The official E2E challenge script computes its
    multi-reference ROUGE-L differently (pycocoevalcap via e2e-metrics' measure_scores.py: LCS precision and
    recall each maximised over the references, combined with beta 1.2, on PTB-tokenised text), so E2E numbers
    here compare with Pu et al.'s, not with the challenge leaderboard's."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals, per_example = Counter(), []
    for targets, prediction in zip(references, predictions):
        scores = scorer.score_multi(targets, prediction)
        for name, score in scores.items():
            totals[name] += score.fmeasure
        per_example.append(round(scores["rougeL"].fmeasure, 4))
    metrics = {name: totals[name] / len(references) for name in ("rouge1", "rouge2", "rougeL")}
    metrics["n_test"] = len(references)  # inputs scored
    metrics["n_references"] = sum(map(len, references))
    metrics["per_example"] = per_example  # ROUGE-L per test input, in test order, for the paired bootstrap
    return metrics


def predict(task_model: TaskModel, rows: list[Row], batch_size: int, mode: str,
            max_target_length: int) -> tuple[list[str], int]:
    """The model's answers on `rows` as they are scored (label words, `<other>`, or generated text) and the
    tokens processed to get them."""
    task = task_model.encoder.task
    if task.kind == "generation":
        return generate(task_model, rows, batch_size, max_target_length)
    if task_model.uses_head:
        return predict_with_head(task_model, rows, batch_size)
    if mode == "rank":
        return predict_by_rank(task_model, rows, batch_size)
    longest = max(len(task_model.encoder.target_ids(label)) for label in task.labels)
    texts, tokens = generate(task_model, rows, batch_size, longest)
    return [match_label(text, task.labels) for text in texts], tokens


def evaluate(task_model: TaskModel, rows: list[Row], batch_size: int, mode: str,
             max_target_length: int) -> tuple[dict, int]:
    """Metrics of the model on `rows` and the number of tokens processed to get them."""
    task = task_model.encoder.task
    if task.kind == "generation":  # each input once, scored against all its references
        groups = input_groups(task, rows)
        texts, tokens = generate(task_model, [group[0] for group in groups], batch_size, max_target_length)
        return generation_metrics([[task.target(row) for row in group] for group in groups], texts), tokens
    golds = [task.target(row) for row in rows]
    predictions, tokens = predict(task_model, rows, batch_size, mode, max_target_length)
    return classification_metrics(golds, predictions, task.labels), tokens
