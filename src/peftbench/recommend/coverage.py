"""Like with like: methods are compared only on the blocks (model × task × data size) that every one of them
ran on, so a method run only on an easy task cannot lead on the strength of that task alone."""

from dataclasses import dataclass

from peftbench.configurations import Config

Block = tuple[str, str, int]  # model, task, training examples


def block_of(config: Config) -> Block:
    return config.model, config.task, config.n_train


def block_name(block: Block) -> str:
    model, task, n_train = block
    return f"{model} / {task} / n={n_train}"


@dataclass
class Coverage:
    """Which blocks a ranking compares the methods on, and what that leaves out."""

    shared: list[Block]  # blocks every compared method ran on
    methods: list[str]  # the compared methods (configuration labels)
    missing: dict[Block, list[str]]  # a block left out -> the compared methods that did not run on it
    dropped: dict[str, list[Block]]  # a method left out -> the blocks it ran on

    def notes(self) -> list[str]:
        if not self.missing:
            return []
        return [f"Compared like with like: only on the {len(self.shared)} block(s) every ranked method ran on"
                f" ({', '.join(map(block_name, self.shared))}); left out "
                + "; ".join(f"{block_name(block)} (no {', '.join(absent)} there)"
                            for block, absent in self.missing.items()) + "."]


def shared_blocks(items: list[Config]) -> Coverage:
    """The blocks every method of `items` ran on. When no block holds them all, the method that ran on the
    fewest blocks is left out, until one does; on a tie the later of them in `items` (configs' order: full
    tuning, the yardstick, first, then as stored)."""
    ran: dict[str, set[Block]] = {}
    for config in items:
        ran.setdefault(config.label, set()).add(block_of(config))
    methods, dropped = list(ran), {}
    while methods and not set.intersection(*(ran[m] for m in methods)):
        fewest = min(reversed(methods), key=lambda m: len(ran[m]))
        methods.remove(fewest)
        dropped[fewest] = sorted(ran[fewest])
    shared = set.intersection(*(ran[m] for m in methods)) if methods else set()
    every = set().union(*ran.values())
    missing = {block: [m for m in methods if block not in ran[m]] for block in sorted(every - shared)}
    return Coverage(sorted(shared), methods, missing, dropped)
