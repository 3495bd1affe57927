"""Hub datasets and half-precision checkpoints as a user with the hub has them: replicas in the real layouts
(tests/hub_replicas.py) read by the real loaders from an offline hub cache and checkpoint directories."""

import dataclasses
import json

import pytest
import torch

from conftest import run_cli, write_suite
from hub_replicas import checkpoints, dataset_repos, hub_cache, write_repo  # noqa: F401 (fixtures)
from peftbench.data import Encoder, make_splits
from peftbench.models import load_model
from peftbench.tasks import TASKS, TaskSpec, get_task
from peftbench.tasks.hub import HUB_SOURCES, HUB_TASKS, HubSource, hub_task

# task -> training rows, test rows and the columns its dataset has (the replicas hold these many rows)
REPLICA_ROWS = {
    "ag_news": (40, 12, {"text", "label"}),
    "cola": (40, 12, {"sentence", "label", "idx"}),
    "e2e_nlg": (41, 14, {"meaning_representation", "human_reference"}),
    "samsum": (40, 12, {"id", "dialogue", "summary"}),
    "boolq": (40, 12, {"question", "passage", "idx", "label"}),
    "rte": (40, 12, {"premise", "hypothesis", "idx", "label"}),
    "copa": (40, 12, {"premise", "choice1", "choice2", "question", "idx", "label"}),
    "cnn_dailymail": (42, 12, {"article", "highlights", "id"}),
}


@pytest.mark.parametrize("spec", HUB_TASKS, ids=lambda spec: spec.name)
def test_every_hub_task_loads_its_replica(hub_cache, spec):
    data = spec.load()
    train_rows, test_rows, columns = REPLICA_ROWS[spec.name]
    assert (len(data.train), len(data.test)) == (train_rows, test_rows)
    assert set(data.train[0]) == set(data.test[0]) == columns
    for row in data.train + data.test:
        spec.prompt(row)
        if spec.kind == "classification":  # ClassLabel values arrive as the ints the label map names
            assert spec.target(row) in spec.labels
        else:
            assert isinstance(spec.target(row), str) and spec.target(row)


def test_e2e_keeps_each_meaning_representation_in_one_split(hub_cache):
    task = get_task("e2e_nlg")
    splits = make_splits(task, task.load(), split_seed=0, val_cap=2500, test_cap=2500)
    mrs = [{row["meaning_representation"] for row in split} for split in (splits.train, splits.val, splits.test)]
    assert not (mrs[0] & mrs[1]) and not (mrs[0] & mrs[2]) and not (mrs[1] & mrs[2])
    # The replica: 14 training MRs (41 references), one drawn for validation; the 5 test MRs with 14 references.
    assert (len(mrs[1]), len(mrs[2]), len(splits.test)) == (1, 5, 14)
    assert len(splits.train) + len(splits.val) == 41 and len(mrs[0]) == 13
    # A scale's first rows hold distinct MRs before any MR's second reference.
    assert len({row["meaning_representation"] for row in splits.train_at(13)}) == 13


def _variant(name: str, source: HubSource) -> TaskSpec:
    """The task `name` read from another source."""
    spec = get_task(name)
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name not in ("load", "source")}
    return hub_task(source, **{**fields, "name": f"{name}_variant"})


def _damaged_copy(cache) -> HubSource:
    files = dict(dataset_repos()[("fancyzhx/ag_news", "main")])
    files["data/train-00000-of-00001.parquet"] = b"PAR1 truncated by a broken download"
    write_repo(cache, "peftbench-tests/damaged-ag-news", "main", files, keep=lambda path: True)
    return dataclasses.replace(HUB_SOURCES["ag_news"], repo="peftbench-tests/damaged-ag-news")


LOADER_FAILURES = {
    "not_downloaded": (lambda cache: dataclasses.replace(HUB_SOURCES["ag_news"], repo="peftbench-tests/absent"),
                       "ag_news", ["cannot load dataset 'peftbench-tests/absent'", "HF_HUB_OFFLINE is set",
                                   "run once with network access"]),
    # The original wiring: e2e's main revision, which holds only README.md and the script e2e_nlg.py.
    "script_only": (lambda cache: dataclasses.replace(HUB_SOURCES["e2e_nlg"], revision="main"), "e2e_nlg",
                    ["dataset 'tuetschek/e2e_nlg' holds only a loading script (e2e_nlg.py)", "refs/convert/parquet"]),
    "damaged_file": (_damaged_copy, "ag_news", ["cannot read dataset 'peftbench-tests/damaged-ag-news'",
                                                "datasets--peftbench-tests--damaged-ag-news to download it again"]),
}


@pytest.mark.parametrize("case", LOADER_FAILURES)
def test_a_loader_failure_is_one_line_and_leaves_the_store_untouched(hub_cache, tmp_path, monkeypatch, case):
    make_source, task_name, expected = LOADER_FAILURES[case]
    spec = _variant(task_name, make_source(hub_cache))
    monkeypatch.setitem(TASKS._items, spec.name, spec)  # a registered task, as a built-in one is
    suite = write_suite(tmp_path / "suite.json", models=["config:tiny-t5"], tasks=[spec.name])
    store = tmp_path / "results.db"
    code, out, err = run_cli("run", suite, "--store", store, "--device", "cpu")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert all(part in err for part in expected), err
    assert not store.exists()


def test_checkpoints_load_as_fp32_master_weights_whatever_they_store(checkpoints):
    from transformers import AutoConfig, AutoModelForCausalLM

    opt = checkpoints["opt-float16"]
    assert json.loads((opt / "config.json").read_text())["dtype"] == "float16"
    assert AutoModelForCausalLM.from_pretrained(opt).dtype == torch.float16  # transformers 5's own default
    for name, folder in checkpoints.items():
        assert AutoConfig.from_pretrained(folder).dtype == getattr(torch, name.split("-")[1])
        assert {p.dtype for p in load_model(str(folder)).model.parameters()} == {torch.float32}, name
    assert {p.dtype for p in load_model(str(opt), weights_dtype="bfloat16").model.parameters()} == {torch.bfloat16}


def test_a_hub_id_loads_from_the_cache_offline_as_fp32(checkpoints, hub_cache):
    """`--model facebook/opt-125m` after a download: from_pretrained finds the hub cache's snapshot offline."""
    folder = checkpoints["opt-float16"]
    files = {path.name: path.read_bytes() for path in folder.iterdir()}
    write_repo(hub_cache, "peftbench-tests/opt-fp16", "main", files, keep=lambda path: True, kind="models")
    loaded = load_model("peftbench-tests/opt-fp16")
    assert loaded.family == "decoder" and {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    assert loaded.tokenizer("Answer:")["input_ids"][0] == 2  # OPT's `</s>` BOS, from the cached tokenizer


def test_weights_dtype_is_a_suite_key_recorded_in_every_run(tmp_path):
    suite = write_suite(tmp_path / "bf16.json", weights_dtype="bfloat16")
    runs = json.loads(run_cli("run", suite, "--dry-run", "--json")[1])["runs"]
    assert runs and all(run["weights_dtype"] == "bfloat16" for run in runs)
    code, _, err = run_cli("run", write_suite(tmp_path / "fp16.json", weights_dtype="float16"), "--dry-run")
    assert code == 2 and "weights_dtype" in err and "'float32' or 'bfloat16'" in err, err


def test_adamw_over_fp16_weights_overflows():
    """Why fp32 master weights: one AdamW step on fp16 weights turns small gradients into inf/NaN (the
    second-moment estimate and epsilon underflow in fp16)."""
    weights = torch.nn.Parameter(torch.zeros(4, dtype=torch.float16))
    weights.grad = torch.tensor([1e-3, 0, 0, 1e-3], dtype=torch.float16)
    torch.optim.AdamW([weights], lr=1e-3, foreach=True).step()
    assert not torch.isfinite(weights).all()


@pytest.mark.parametrize("name", ["opt-float16", "llama-bfloat16"])
def test_full_tuning_of_a_half_precision_checkpoint_trains_and_moves_the_weights(checkpoints, hub_cache, name):
    from peftbench.execution import build_task_model
    from peftbench.runspec import single_run
    from peftbench.train import train

    task = get_task("boolq")
    splits = make_splits(task, task.load(), split_seed=0, val_cap=8, test_cap=8)
    spec = single_run(str(checkpoints[name]), "full", n_train=16, batch_size=8, epochs=2, lr=1e-3,
                      max_input_length=96, max_target_length=4, group_by_length=True)
    task_model = build_task_model(spec, task)
    before = {key: value.detach().clone() for key, value in task_model.model.state_dict().items()}
    examples = [task_model.encoder.encode(row) for row in splits.train_at(16)]
    result = train(task_model, examples, [task_model.encoder.encode(row) for row in splits.val], spec.train, spec.seed)
    assert all(torch.isfinite(torch.tensor(epoch["train_loss"])) for epoch in result.curve)
    after = task_model.model.state_dict()
    assert {value.dtype for value in after.values() if value.is_floating_point()} == {torch.float32}
    moved = [key for key in before if not torch.equal(before[key], after[key])]
    assert len(moved) > len(before) // 2, moved


SPECIAL_TOKENS_TASK = TaskSpec(name="probe", kind="classification", load=lambda: None, template="{text}\nAnswer:",
                               target_field="label", primary_metric="accuracy", source="test", description="probe",
                               label_map={"yes": "yes", "no": "no"})
# family -> (prompt ids, target ids) of "The Eagle\nAnswer:" and "yes" with the replica tokenizers, pinned.
# T5's `</s>` (1) ends prompt and target; OPT's `</s>` (2) opens the prompt and Llama's `<s>` (1) does; BERT's
# [CLS] (101) and [SEP] (102) surround the prompt (MiniLM's real vocabulary: "the" 1996, "eagle" 6755). Decoder
# targets start with the space after the cue (GPT-2's "Ġ", SentencePiece's "▁") and end with EOS (2).
PINNED_IDS = {
    "t5": ([30, 4, 61, 5, 26, 19, 3, 107, 1], [285, 1]),  # ▁The ▁ E a g l e ▁Answer: </s> | ▁yes </s>
    "opt": ([2, 269, 401, 68, 74, 318, 202, 460, 29], [224, 92, 289, 2]),  # </s> The ĠE a g le Ċ Answer : | Ġ y es </s>
    "llama": ([1, 362, 460, 289, 295, 383, 259, 566], [316, 312, 348, 2]),  # <s> ▁The ▁E a g le \n Answer: | ▁ y es </s>
    "bert": ([101, 1996, 6755, 3437, 1024, 102], [2748, 102]),  # [CLS] the eagle answer : [SEP] | yes [SEP]
}


@pytest.mark.parametrize("family", PINNED_IDS)
def test_special_tokens_are_the_tokenizers_own(checkpoints, family):
    loaded = load_model(str(checkpoints[f"{family}-float16"]))
    encoder = Encoder(SPECIAL_TOKENS_TASK, loaded.family, loaded.tokenizer, max_input_length=64, max_target_length=8)
    prompt = encoder.prompt_ids({"text": "The Eagle", "label": "yes"})
    target = encoder.target_ids("yes")
    assert (prompt, target) == PINNED_IDS[family]
