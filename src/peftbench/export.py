"""`peftbench export RUN_ID --out DIR [--merged]`: hand over what a run trained in the formats users load.

- A method that HF PEFT implements (the adapted model is a `PeftModel`): DIR is a PEFT adapter directory
  (`adapter_config.json`, `adapter_model.safetensors`, the tokenizer), which
  `PeftModel.from_pretrained(base_model, DIR)` loads with no peftbench installed; a config: shape's random
  base weights are saved in `DIR/base`.
- peftbench's own methods (adapters, KronA, T-Few's LoRA, hybrids...): DIR holds the run's safetensors and
  manifest, which `peftbench.load(DIR)` loads.
- `--merged`, for methods that fold into the base weights: DIR is a whole model directory (config,
  safetensors, tokenizer) that `AutoModel*.from_pretrained(DIR)` loads.

An encoder's classification head is saved beside it (`head.safetensors`, `head.json` with the label names in
class order and the pooling: a mean over the real tokens). Every DIR also holds the run's manifest, so that
`peftbench.load(DIR)` reads any export, and a `README.md` model card (peftbench.model_card): the run's spec,
its score and the spread over the seeds of its configuration, the data digests, the provenance, and a snippet
that loads DIR with transformers alone and predicts as the run was scored."""

import json
import shutil
from pathlib import Path

from peftbench.errors import UserError
from peftbench.identity import configuration_key
from peftbench.model_card import BASE_FOLDER, base_reference, loading_snippet, model_card


def _empty_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out '{out}' exists and is not an empty folder; choose a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)


def _same_configuration(spec: dict, rows: list[dict]) -> list[dict]:
    """The finished runs whose spec differs from `spec` in the seed only (what the report averages)."""
    key = configuration_key(spec)
    return [row for row in rows if row["status"] == "finished" and configuration_key(row["spec"]) == key]


def export(run_id: str, store: Path, out: Path, merged: bool = False, final: Path | None = None) -> dict:
    """Write the run's export under `out` (a new or empty folder); returns the format and the files. `final` is
    where the folder will live when `out` is a staging folder renamed into place: the card's loading code names
    it."""
    from safetensors.torch import save_file

    from peftbench.api import load
    from peftbench.artifacts import HEAD_CONFIG, HEAD_TENSORS, MANIFEST, TENSORS, folder_of
    from peftbench.methods import METHODS
    from peftbench.store import find_run, read_rows

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
        _name_the_base(out, manifest["spec"]["model"], manifest["spec"]["weights_dtype"])
    else:
        kind = "peftbench"
    # Every export holds the run's own folder (manifest and trained tensors: small for a PEFT method), so
    # peftbench.load(out) reads any of them; a merged export's manifest says to load the merged weights instead.
    for path in folder_of(row, store).iterdir():
        if not (kind == "merged" and path.name == TENSORS):
            shutil.copy2(path, out / path.name)
    if kind == "merged":
        (out / MANIFEST).write_text(json.dumps({**manifest, "export": "merged"}, indent=1, sort_keys=True))
    task_model.encoder.tokenizer.save_pretrained(out)
    if task_model.uses_head:
        head = task_model.model.head
        save_file({"weight": head.weight.detach().cpu().contiguous(), "bias": head.bias.detach().cpu().contiguous()},
                  str(out / HEAD_TENSORS))
        (out / HEAD_CONFIG).write_text(json.dumps({"labels": task_model.encoder.task.labels,
                                                   "pooling": "mean over real tokens (attention mask)",
                                                   "hidden_size": head.in_features}, indent=1))
    seeds = _same_configuration(manifest["spec"], read_rows(store))
    snippet = loading_snippet(task_model, manifest, kind, str(final or out))
    (out / "README.md").write_text(model_card(row, seeds, manifest, kind, snippet))
    return {"run_id": row["run_id"], "format": kind, "out": str(out),
            "files": sorted(path.name for path in out.iterdir())}


def _name_the_base(out: Path, model: str, weights_dtype: str) -> None:
    """adapter_config.json names the base as a user loads it (PEFT records the path it was loaded from, for the
    offline packages a folder of the exporting machine); a config: shape's random weights are saved beside it."""
    from peftbench.models import load_model

    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_reference(model)[2]
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    if model.startswith("config:"):
        load_model(model, weights_dtype=weights_dtype).model.save_pretrained(out / BASE_FOLDER)
