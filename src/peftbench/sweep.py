"""LR sweep then seeds (Lialin et al. 11.1): every learning rate is tried on the first seed, the best one
on the validation set (never the test set) is kept, and the other seeds run at it.

A swept run's spec carries `sweep`: {"group": id shared by the runs that differ only in LR and seed,
"lrs": the candidates, "select_by": val_loss | val_score, "seeds": the seeds, the first being the sweep's}.
The runner and the report both pick the LR with `select_lr`, so they cannot disagree."""

import math


def sweep_score(row: dict, select_by: str) -> float:
    """Higher is better: minus the best validation loss, or the validation score. A failed or diverged
    sweep run scores minus infinity, so it is never chosen."""
    if row.get("status", "finished") != "finished":
        return -math.inf
    value = row.get("best_val_loss") if select_by == "val_loss" else row.get("val_score")
    if value is None or not math.isfinite(value):
        return -math.inf
    return -value if select_by == "val_loss" else value


def select_lr(sweep_rows: list[dict], sweep: dict) -> float | None:
    """The chosen LR of one sweep group, from its runs on the first seed; None until every candidate
    LR has ended (finished or failed). Ties go to the LR listed first."""
    first_seed = sweep["seeds"][0]
    by_lr = {row["lr"]: row for row in sweep_rows
             if row["seed"] == first_seed and row.get("status") in ("finished", "failed")}
    if any(lr not in by_lr for lr in sweep["lrs"]):
        return None
    best = max(sweep["lrs"], key=lambda lr: (sweep_score(by_lr[lr], sweep["select_by"]), -sweep["lrs"].index(lr)))
    return best if sweep_score(by_lr[best], sweep["select_by"]) > -math.inf else None


def final_rows(rows: list[dict]) -> list[dict]:
    """The rows a report aggregates: unswept rows as they are, and of each sweep group only the runs at
    its chosen LR (the losing LRs' single-seed runs are left out). A group still undecided is left out."""
    groups: dict[str, list[dict]] = {}
    kept = []
    for row in rows:
        if row.get("sweep"):
            groups.setdefault(row["sweep"]["group"], []).append(row)
        else:
            kept.append(row)
    for members in groups.values():
        chosen = select_lr(members, members[0]["sweep"])
        kept += [row for row in members if chosen is not None and row["lr"] == chosen]
    return kept
