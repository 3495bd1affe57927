"""A sharded run's process among its ranks (peftbench.sharding): which rows of each batch it trains on, with
what share of the batch's loss, and the collectives the training loop needs to decide alike on every rank.
Its own module so the training loop (peftbench.train) can take one without importing the sharding engine."""

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from peftbench.data import IGNORE


def _loss_terms(batch: dict[str, torch.Tensor], family: str) -> int:
    """What the batch's loss averages over: examples (a classification head), target tokens (seq2seq), or
    target tokens after the shift to next-token prediction (a decoder's loss drops each row's first label)."""
    if family == "encoder":
        return len(batch["labels"])
    labels = batch["labels"][:, 1:] if family == "decoder" else batch["labels"]
    return int((labels != IGNORE).sum())


@dataclass(frozen=True)
class Ranks:
    """This process's place among the run's processes, and the collectives the training loop needs."""

    rank: int
    size: int
    device: torch.device

    def part(self, batch: dict[str, torch.Tensor], family: str) -> tuple[dict[str, torch.Tensor], float]:
        """This rank's consecutive rows of a collated batch (padded as the whole batch is) and its share of the
        batch's loss terms. A rank left without rows (a last batch shorter than the ranks) runs one row
        weighted 0: every rank must run every forward and backward pass, whose collectives the others await."""
        rows = len(batch["input_ids"])
        chunk = math.ceil(rows / self.size)
        start = min(self.rank * chunk, rows)
        stop = min(start + chunk, rows)
        if start == stop:
            return {key: value[:1] for key, value in batch.items()}, 0.0
        own = {key: value[start:stop] for key, value in batch.items()}
        return own, _loss_terms(own, family) / _loss_terms(batch, family)

    def total(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of a tensor over the ranks."""
        summed = value.detach().clone()
        dist.all_reduce(summed)
        return summed

    def any(self, flag: bool) -> bool:
        return bool(self.total(torch.tensor(float(flag), device=self.device)) > 0)
