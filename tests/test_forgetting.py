"""Forgetting (peftbench.forgetting): the held-out general text read from the installed package, the loss as
the mean cross-entropy per token that transformers itself computes, the base model as "before" whatever the
method's start, and the stored runs that carry it."""

import hashlib
import statistics

import pytest
import torch
from conftest import run_cli, write_suite

from peftbench import forgetting
from peftbench.data import IGNORE
from peftbench.errors import UserError
from peftbench.execution import _base_general_loss, build_task_model
from peftbench.packages import package_dir
from peftbench.runspec import single_run
from peftbench.store import read_rows
from peftbench.tasks import get_task

LEE_SHA256 = "a878f9a58f6743c32985c56c2f2f75988386216b38a4023a01fd3bcf7884d93e"  # gensim 4.4.0's lee.cor
TASK = get_task("bbc_topic")


def task_model(model: str, method: str = "lora", trains: bool = True):
    spec = single_run(model, method, n_train=4, batch_size=4, max_input_length=32, max_target_length=4)
    return build_task_model(spec, TASK, trains=trains)


def test_the_general_text_is_the_lee_corpus_from_the_installed_package():
    documents, source = forgetting.general_text()
    assert len(documents) == source["documents"] == 50
    assert source["sha256"] == LEE_SHA256 and source["file"] == "gensim/test/test_data/lee.cor"
    assert documents[0].startswith("The national executive of the strife-torn Democrats last night appointed")
    assert any("£" in document for document in documents)  # read as Latin-1, as the file is written
    raw = (package_dir("gensim", "") / "test/test_data/lee.cor").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == LEE_SHA256


def test_a_missing_corpus_package_is_one_line_naming_the_install(monkeypatch, tmp_path):
    monkeypatch.setattr(forgetting, "CORPUS_FILE", ("no_such_corpus_package", "lee.cor"))
    forgetting.general_text.cache_clear()
    try:
        with pytest.raises(UserError, match=r"'no_such_corpus_package' is not installed; run `pip install --no-deps"):
            forgetting.general_text()
        # a suite with a text-to-text model stops when it is planned, before anything is stored
        suite = write_suite(tmp_path / "t5.json", models=["config:tiny-t5"])
        code, out, err = run_cli("run", suite, "--store", tmp_path / "r.db", "--device", "cpu")
        assert code == 2 and err.strip().count("\n") == 0 and "no_such_corpus_package" in err
        assert "Traceback" not in err and not (tmp_path / "r.db").exists()
    finally:
        monkeypatch.undo()
        forgetting.general_text.cache_clear()


@pytest.mark.parametrize("model", ["config:tiny-llama", "config:tiny-t5"])
def test_the_loss_is_the_per_token_mean_of_transformers_own_loss(model, one_thread):
    scored = task_model(model, trains=False)
    loss, tokens = forgetting.general_loss(scored)
    total, count = 0.0, 0
    with torch.no_grad():
        for example in forgetting._examples(scored):  # one document at a time: no padding at all
            output = scored.model(input_ids=torch.tensor([example["input_ids"]]),
                                  labels=torch.tensor([example["labels"]]))
            labels = example["labels"][1:] if scored.encoder.family == "decoder" else example["labels"]
            n = sum(label != IGNORE for label in labels)
            total, count = total + float(output.loss) * n, count + n
    assert tokens == count > 2000
    assert loss == pytest.approx(total / count, rel=1e-5)


def test_t5_reads_the_first_half_and_is_scored_on_the_second():
    scored = task_model("config:tiny-t5", trains=False)
    tokenizer, (prefix, suffix) = scored.encoder.tokenizer, scored.encoder.special_tokens
    assert suffix  # the tokenizer's end of sequence closes the encoder's half (T5's </s>; the stand-in's [SEP])
    for document, example in zip(forgetting.general_text()[0], forgetting._examples(scored)):
        ids = tokenizer(document, add_special_tokens=False)["input_ids"]
        half = len(ids) // 2
        assert example["input_ids"] == prefix + ids[:half] + suffix
        assert example["labels"] == ids[half:]


def test_an_identity_start_forgets_nothing_and_its_adapter_acts(one_thread):
    base = forgetting.general_loss(task_model("config:tiny-llama", trains=False))
    tuned = task_model("config:tiny-llama", "lora")
    at_start = forgetting.forgetting_fields(base, forgetting.general_loss(tuned))
    assert at_start["forgetting"] == pytest.approx(0, abs=1e-6)
    with torch.no_grad():
        for name, parameter in tuned.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    assert abs(forgetting.general_loss(tuned)[0] - base[0]) > 1e-3


def test_before_is_the_base_model_not_a_method_that_starts_elsewhere(one_thread):
    spec = single_run("config:tiny-llama", "prompt_tuning[tokens=4]", n_train=4, batch_size=4, max_input_length=32,
                      max_target_length=4)
    base = forgetting.general_loss(build_task_model(spec, TASK, trains=False))
    at_start = forgetting.general_loss(build_task_model(spec, TASK))
    assert abs(at_start[0] - base[0]) > 1e-4  # random virtual tokens change the loss before any training
    assert _base_general_loss(spec, TASK, torch.device("cpu")) == pytest.approx(base)
    assert _base_general_loss(single_run("config:tiny-bert", "lora", n_train=4, batch_size=4, max_input_length=32,
                                         max_target_length=4), TASK, torch.device("cpu")) is None


def test_stored_text_to_text_runs_carry_forgetting_and_the_others_do_not(grid_store):
    rows = [row for row in read_rows(grid_store) if row["status"] == "finished"]
    measured = [row for row in rows if row.get("forgetting") is not None]
    assert {row["model"] for row in measured} == {"config:tiny-t5"}
    assert all(row["kind"] == "train" for row in measured)
    assert {row["model"] for row in rows if row["kind"] == "train"} - {"config:tiny-t5"} == {"config:tiny-bert"}
    assert len(measured) == sum(row["kind"] == "train" and row["model"] == "config:tiny-t5" for row in rows)
    befores = {row["general_loss_before"] for row in measured}
    assert len(befores) == 1  # one base model: one "before" for every method, task and seed
    for row in measured:
        assert row["forgetting"] == pytest.approx(row["general_loss_after"] - row["general_loss_before"])
        assert row["general_text"]["sha256"] == LEE_SHA256 and row["general_text"]["tokens"] > 2000
    assert statistics.pstdev(row["forgetting"] for row in measured) > 0  # tuning moved the loss


def test_the_base_loss_is_kept_on_disk_and_reused_only_for_the_same_model_text_and_precision(monkeypatch, tmp_path):
    """Measured once, then read from the cache file in a new process (the in-process memo cleared), with the same
    value; another model, another general text or another precision measures its own."""
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(forgetting, "_BEFORE", {})
    built = []

    def base_loss(model: str, **overrides):
        spec = single_run(model, "lora", n_train=4, batch_size=4, max_input_length=32, max_target_length=4, **overrides)
        real = forgetting.general_loss
        monkeypatch.setattr(forgetting, "general_loss", lambda base: built.append(model) or real(base))
        forgetting._BEFORE.clear()  # as a new process would start
        loss = _base_general_loss(spec, TASK, torch.device("cpu"))
        monkeypatch.setattr(forgetting, "general_loss", real)
        return loss

    first = base_loss("config:tiny-llama")
    assert built == ["config:tiny-llama"] and len(list((tmp_path / "models").glob("general-loss-*.json"))) == 1
    assert base_loss("config:tiny-llama") == first and built == ["config:tiny-llama"]  # read, not measured
    assert first == pytest.approx(forgetting.general_loss(task_model("config:tiny-llama", trains=False)))
    other = base_loss("config:tiny-t5")
    assert built[-1] == "config:tiny-t5" and other != first
    base_loss("config:tiny-llama", bf16=True)  # computed under bf16 autocast
    assert len(built) == 3
    documents, source = forgetting.general_text()
    monkeypatch.setattr(forgetting, "general_text", lambda: (documents[:10], {**source, "sha256": "another text"}))
    shorter = base_loss("config:tiny-llama")
    assert len(built) == 4 and shorter[1] < first[1]
