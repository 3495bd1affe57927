"""What a run trained, kept beside the store: one folder per run id under `<store folder>/weights/`, holding
`tensors.safetensors` (every tensor the run trained or the method added, and an encoder's classification
head) and `manifest.json` (the run's spec, the task's prompt template and label words, and the file's
sha256), so a run can be reloaded, predicted with and exported without the data it was trained on.

A folder is written whole or not at all: into a hidden staging folder first, flushed to disk, then renamed
into place, so an interrupted or killed save leaves nothing a later run, `show` or `export` would read. The
run's row records the folder, the file's sha256 and its size; deleting a run's folder never touches the store
(loading it then says the weights are gone). Suite key `save`: `auto` (the default) keeps every PEFT run's
tensors, which are small, and full tuning's whole model up to AUTO_SAVE_LIMIT_BYTES; `methods` keeps the PEFT
runs' only; `all` keeps every run's; `none` keeps nothing."""

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Literal

import torch

from peftbench.errors import UserError

SavePolicy = Literal["none", "methods", "auto", "all"]
# save: auto keeps full tuning's whole model up to this size: every run of the models a CPU trains (MiniLM-L6's
# 90 MB, SmolLM2-135M's 540 MB in fp32), so whichever run `recommend` ranks first can be exported; larger
# models (T5-large: 3 GB a run, times seeds and scales) are kept with save: all, or by `run --rerun` with it.
AUTO_SAVE_LIMIT_BYTES = 1 << 30
TENSORS = "tensors.safetensors"
MANIFEST = "manifest.json"
# An export's encoder head (peftbench.export): its tensors, and its labels in class order and pooling.
HEAD_TENSORS = "head.safetensors"
HEAD_CONFIG = "head.json"


def weights_root(store_path: Path) -> Path:
    return store_path.parent / "weights"


def own_tensor_ids(model: torch.nn.Module) -> frozenset[int]:
    """The ids of a model's parameters and buffers: taken before a method is applied, what the method did not add."""
    return frozenset(id(tensor) for tensor in (*model.parameters(), *model.buffers()))


def adapter_state(model: torch.nn.Module, base_ids: frozenset[int]) -> dict[str, torch.Tensor]:
    """What a method checkpoint holds, each tensor under one name: every tensor of the model's state that the run
    trains or that the method added, parameters and persistent buffers alike (VeRA's shared random projections,
    Super-Tuning's indices: a PEFT checkpoint keeps them too). A tensor shared by several modules (Compacter's
    shared matrices, VeRA's projections) is kept once, and loading it under that name sets it everywhere."""
    seen: set[int] = set()
    state = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if (tensor.requires_grad or id(tensor) not in base_ids) and id(tensor) not in seen:
            seen.add(id(tensor))
            state[name] = tensor
    return state


def trained_tensors(model: torch.nn.Module, base_ids: frozenset[int]) -> dict[str, torch.Tensor]:
    """CPU copies of the adapter state (adapter_state): what a run saves."""
    return {name: tensor.detach().to("cpu", copy=True).contiguous()
            for name, tensor in adapter_state(model, base_ids).items()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save(store_path: Path, run_id: str, tensors: dict[str, torch.Tensor], manifest: dict) -> dict:
    """Write a run's folder atomically; returns what its row records (folder, sha256, bytes, tensors)."""
    from safetensors.torch import save_file

    root = weights_root(store_path)
    final = root / run_id
    staging = root / f".staging-{run_id}-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir(parents=True)
        save_file(tensors, str(staging / TENSORS))
        sha256 = _sha256(staging / TENSORS)
        size = (staging / TENSORS).stat().st_size
        record = {"folder": str(final.relative_to(store_path.parent)), "sha256": sha256, "bytes": size,
                  "tensors": len(tensors)}
        (staging / MANIFEST).write_text(json.dumps({**manifest, "weights": record}, indent=1, sort_keys=True,
                                                   default=str))
        for path in (staging / TENSORS, staging / MANIFEST):
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        if final.exists():  # an earlier attempt of the same run id: the new one replaces it
            shutil.rmtree(final)
        staging.rename(final)
        _fsync_folder(root)
        return record
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):
            raise UserError(f"cannot write the weights of run {run_id} under '{root}' ({error.strerror or error});"
                            " free space or choose another --store, or set `save: none`") from None
        raise


def folder_of(row: dict, store_path: Path) -> Path:
    """The saved folder of a stored run, or a UserError saying why there is none."""
    record = row.get("weights")
    if not record:
        reason = row.get("weights_skipped") or "the run kept no weights"
        raise UserError(f"run {row['run_id']} has no saved weights ({reason}); train it again with `save: all` in"
                        f" its suite: `peftbench run SUITE --set save=all --rerun {row['run_id'][:8]}`")
    return store_path.parent / record["folder"]


def read_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise UserError(f"no saved run in '{folder}' (no {MANIFEST}): its weights were deleted or it is not a"
                        " peftbench run folder; run it again to keep its weights") from None
    except (OSError, ValueError) as error:
        raise UserError(f"'{folder / MANIFEST}' cannot be read ({error}); run the run again") from None


def load_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """The folder's tensors, after checking them against the checksum in its manifest."""
    from safetensors.torch import load_file

    record = read_manifest(folder)["weights"]
    path = folder / TENSORS
    if not path.is_file():
        raise UserError(f"the weights of '{folder}' are gone ({TENSORS} is missing); run the run again")
    if _sha256(path) != record["sha256"]:
        raise UserError(f"'{path}' does not match the checksum recorded when it was saved (damaged or replaced);"
                        " run the run again")
    return load_file(str(path))
