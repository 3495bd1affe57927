import pytest

from peftbench.data import Encoder, _truncate, make_splits
from peftbench.models import load_model
from peftbench.tasks import TaskData, get_task


def test_splits_are_deterministic_and_disjoint():
    task = get_task("bbc_topic")
    first = make_splits(task, task.load(), split_seed=0, val_cap=100, test_cap=200)
    again = make_splits(task, task.load(), split_seed=0, val_cap=100, test_cap=200)
    other = make_splits(task, task.load(), split_seed=1, val_cap=100, test_cap=200)
    assert first == again and first.test != other.test
    inputs = [{task.prompt(r) for r in split} for split in (first.train, first.val, first.test)]
    # The caps count inputs; BBC holds some articles twice, and a repeated article stays in one split.
    assert (len(inputs[2]), len(inputs[1])) == (200, 100)
    assert len(first.test) == 200  # a classification input once, though BBC holds some articles twice
    assert len(first.train) + len(first.val) < 2225 - 200
    assert not (inputs[0] & inputs[1]) and not (inputs[0] & inputs[2]) and not (inputs[1] & inputs[2])
    files = [{r["source_file"] for r in split} for split in (first.train, first.val, first.test)]
    assert not (files[0] & files[1]) and not (files[0] & files[2]) and not (files[1] & files[2])


def test_scales_are_prefixes():
    task = get_task("finefood_sentiment")
    splits = make_splits(task, task.load(), split_seed=0, val_cap=500, test_cap=1000)
    # the packaged test split, not drawn from train; 10% of the training inputs (a few reviews repeat) for validation
    assert len(splits.test) == 1000 and len(splits.train) + len(splits.val) == 4000
    assert len({task.prompt(row) for row in splits.val}) == int(3979 * 0.1)
    assert splits.train_at(1000)[:100] == splits.train_at(100)


def test_task_without_test_split_takes_a_fifth_for_test():
    task = get_task("bbc_topic")
    rows = [{"headline": str(i), "opening": "", "topic": "tech"} for i in range(50)]
    splits = make_splits(task, TaskData(train=rows), split_seed=0, val_cap=100, test_cap=100)
    assert (len(splits.test), len(splits.val), len(splits.train)) == (10, 4, 36)


def test_truncation_keeps_the_cue_at_the_end():
    ids = list(range(100))
    kept = _truncate(ids, 40)
    assert len(kept) == 40 and kept[:24] == list(range(24)) and kept[-16:] == list(range(84, 100))


@pytest.mark.parametrize("model", ["config:tiny-t5", "config:tiny-llama", "config:tiny-bert"])
def test_encoding_per_family(model):
    loaded = load_model(model)
    task = get_task("finefood_sentiment")
    encoder = Encoder(task, loaded.family, loaded.tokenizer, max_input_length=24, max_target_length=4)
    row = {"review": "tasty " * 50, "score": "great", "product": "p"}
    example = encoder.encode(row)
    tokenizer = loaded.tokenizer
    if loaded.family == "encoder":
        assert example["label"] == task.labels.index("great")
        assert example["input_ids"][0] == tokenizer.cls_token_id and example["input_ids"][-1] == tokenizer.sep_token_id
        assert len(example["input_ids"]) == 24
    elif loaded.family == "seq2seq":
        assert len(example["input_ids"]) == 24 and example["input_ids"][-1] == encoder.eos_id
        assert tokenizer.decode(example["labels"][:-1]) == "great" and example["labels"][-1] == encoder.eos_id
    else:
        prompt_length = example["labels"].count(-100)
        assert prompt_length == 24 and len(example["input_ids"]) == 24 + len(example["labels"]) - prompt_length
        assert tokenizer.decode(example["input_ids"][prompt_length:-1]) == "great"
    assert "great or other" in tokenizer.decode(example["input_ids"])  # the cue survived truncation
