"""`peftbench export RUN_ID --out DIR [--merged]`: hand over what a run trained in the formats users load.

- A method that HF PEFT implements (the adapted model is a `PeftModel`): DIR is a PEFT adapter directory
  (`adapter_config.json`, `adapter_model.safetensors`, the tokenizer), which
  `PeftModel.from_pretrained(base_model, DIR)` loads with no peftbench installed.
- peftbench's own methods (adapters, KronA, T-Few's LoRA, hybrids...): DIR holds the run's safetensors and
  manifest, which `peftbench.load(DIR)` loads.
- `--merged`, for methods that fold into the base weights: DIR is a whole model directory (config,
  safetensors, tokenizer) that `AutoModel*.from_pretrained(DIR)` loads.

An encoder's classification head is saved beside it (`head.safetensors`, `head.json` with the label names in
class order and the pooling: a mean over the real tokens). Every DIR gets a `README.md` model card: the run's
spec, its score and the spread over the seeds of its configuration, the data digests and the provenance."""

import json
import shutil
import statistics
from pathlib import Path

from peftbench.errors import UserError
from peftbench.identity import configuration_key

HEAD_TENSORS = "head.safetensors"
HEAD_CONFIG = "head.json"


def _empty_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out '{out}' exists and is not an empty folder; choose a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)


def _same_configuration(spec: dict, rows: list[dict]) -> list[dict]:
    """The finished runs whose spec differs from `spec` in the seed only (what the report averages)."""
    key = configuration_key(spec)
    return [row for row in rows if row["status"] == "finished" and configuration_key(row["spec"]) == key]


def _model_card(row: dict, seeds: list[dict], manifest: dict, kind: str) -> str:
    spec = manifest["spec"]
    scores = [other["score"] for other in seeds if other.get("score") is not None]
    spread = (f"{statistics.mean(scores):.4f} ± {statistics.stdev(scores):.4f} over {len(scores)} seeds"
              if len(scores) > 1 else "one seed only: no spread")
    loading = {
        "peft": "```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM  # or the"
                " Auto class of the base\n\nbase = AutoModelForCausalLM.from_pretrained(BASE)\nmodel ="
                " PeftModel.from_pretrained(base, \"DIR\")\n```",
        "peftbench": "```python\nimport peftbench\n\npredictor = peftbench.load(\"DIR\")\npredictor.predict(texts)\n```",
        "merged": "```python\nfrom transformers import AutoModelForCausalLM  # or the Auto class of the base\n\n"
                  "model = AutoModelForCausalLM.from_pretrained(\"DIR\")\n```",
    }[kind]
    lines = [f"# peftbench run {row['run_id']}: {spec['method_spec']} on {spec['model']}, task {spec['task']}", "",
             f"Trained by peftbench {manifest.get('peftbench')}, exported as **{kind}**.", "",
             f"- score ({row.get('primary_metric')}): {row.get('score')}; this configuration: {spread}",
             f"- training examples: {spec['n_train']}, seed {spec['seed']}, learning rate {spec.get('lr')}",
             f"- trainable parameters: {row.get('trainable_params')} of {row.get('total_params')}",
             f"- data digests: {json.dumps(row.get('data_digest'))}",
             f"- prompt template: `{json.dumps(manifest['task']['template'])}`",
             "", "## Load", "", loading, "", "## Spec", "", "```json", json.dumps(spec, indent=1, sort_keys=True),
             "```", "", "## Provenance", "", "```json", json.dumps(row.get("provenance"), indent=1, sort_keys=True),
             "```", ""]
    if manifest["family"] == "encoder":
        lines[4:4] = [f"- classification head: `{HEAD_TENSORS}` on a mean over the real tokens' last hidden states;"
                      f" class order in `{HEAD_CONFIG}`"]
    return "\n".join(lines)


def export(run_id: str, store: Path, out: Path, merged: bool = False) -> dict:
    """Write the run's export under `out` (a new or empty folder); returns the format and the files."""
    from safetensors.torch import save_file

    from peftbench.api import find_run, load
    from peftbench.artifacts import folder_of
    from peftbench.methods import METHODS
    from peftbench.store import read_rows

    row = find_run(run_id, store)
    predictor = load(row["run_id"], store=store)
    task_model, manifest = predictor.task_model, predictor.manifest
    method = METHODS.get(manifest["spec"]["method"])
    if merged and not method.mergeable:
        raise UserError(f"{manifest['spec']['method_spec']} cannot be merged into the base weights; export it"
                        " without --merged")
    _empty_folder(out)
    backbone = task_model.model.backbone if task_model.uses_head else task_model.model
    if merged:
        kind = "merged"
        method.merge(backbone).save_pretrained(out)
    elif hasattr(backbone, "peft_config"):
        kind = "peft"
        backbone.save_pretrained(out)
    else:
        kind = "peftbench"
        for path in folder_of(row, store).iterdir():
            shutil.copy2(path, out / path.name)
    if kind != "peftbench":
        task_model.encoder.tokenizer.save_pretrained(out)
    if task_model.uses_head:
        head = task_model.model.head
        save_file({"weight": head.weight.detach().cpu().contiguous(), "bias": head.bias.detach().cpu().contiguous()},
                  str(out / HEAD_TENSORS))
        (out / HEAD_CONFIG).write_text(json.dumps({"labels": task_model.encoder.task.labels,
                                                   "pooling": "mean over real tokens (attention mask)",
                                                   "hidden_size": head.in_features}, indent=1))
    seeds = _same_configuration(manifest["spec"], read_rows(store))
    (out / "README.md").write_text(_model_card(row, seeds, manifest, kind))
    return {"run_id": row["run_id"], "format": kind, "out": str(out),
            "files": sorted(path.name for path in out.iterdir())}
