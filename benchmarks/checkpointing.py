"""Gradient checkpointing's effect on the measured training peak, beside the memory plan's: each model and
method profiled with and without `--gradient-checkpointing` (peftbench profile: a fresh process per method,
CPU peak resident-set growth over the training steps, or CUDA max_memory_allocated), fp32.

    python benchmarks/checkpointing.py [MODEL ...]

Prints Markdown: measured peak and planned peak (gradients + AdamW states + activations on CPU, where the
growth is measured above the built model; the whole plan on CUDA) without and with checkpointing."""

import sys

from peftbench.memory import MemorySettings
from peftbench.memory_grids import planned
from peftbench.profile import ProfileSettings, profile

SHAPE = dict(batch_size=16, seq_len=128, target_len=8)
METHOD = "lora"


def main(models: list[str]) -> None:
    print("| model | method | measured without (MB) | measured with (MB) | planned without (MB) | planned with (MB) |")
    print("|---|---|---|---|---|---|")
    for model in models:
        measured, plans = [], []
        for checkpointing in (False, True):
            settings = ProfileSettings(model=model, steps=3, warmup=1, dtype="fp32", device="cpu",
                                       gradient_checkpointing=checkpointing, **SHAPE)
            entry = profile(settings, [METHOD], reference=False)["methods"][0]
            measured.append(entry.get("peak_memory_bytes"))
            plan = planned(MemorySettings(model=model, method=METHOD, gradient_checkpointing=checkpointing, **SHAPE))
            cuda = entry.get("peak_memory_kind") == "cuda_max_memory_allocated"
            plans.append(plan.total if cuda else plan.total - plan.weights - plan.method_tensors)
        cells = [f"{value / 1e6:,.0f}" if value else "failed" for value in measured + plans]
        print(f"| {model} | {METHOD} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["offline:minilm-l6", "offline:smollm2-135m"])
