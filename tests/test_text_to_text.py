"""Text-to-text evaluation paths: ranked labels, batched generation, and models loaded from a directory."""

import torch

from peftbench.data import Encoder, collate
from peftbench.evaluate import TaskModel, generate, predict_by_rank
from peftbench.models import load_model
from peftbench.tasks import get_task

ROWS = [{"review": text, "score": "great", "product": "p"}
        for text in ["good", "a much longer review that goes on and on about the taste", "bad bad", "ok then"]]


def _task_model(name: str) -> TaskModel:
    loaded = load_model(name)
    encoder = Encoder(get_task("finefood_sentiment"), loaded.family, loaded.tokenizer, 48, 8)
    return TaskModel(model=loaded.model, encoder=encoder, uses_head=False)


def test_rank_picks_the_label_with_the_lowest_loss():
    for name in ["config:tiny-t5", "config:tiny-llama"]:
        task_model = _task_model(name)
        predictions, _ = predict_by_rank(task_model, ROWS, batch_size=3)
        for row, predicted in zip(ROWS, predictions):
            losses = {}
            for label in task_model.encoder.task.labels:
                prompt, target = task_model.encoder.prompt_ids(row), task_model.encoder.target_ids(label)
                example = ({"input_ids": prompt, "labels": target} if name.endswith("t5") else
                           {"input_ids": prompt + target, "labels": [-100] * len(prompt) + target})
                with torch.no_grad():
                    losses[label] = float(task_model.model(**collate([example], 0)).loss) * len(target)
            assert predicted == min(losses, key=losses.get)


def test_batched_generation_matches_one_at_a_time():
    for name in ["config:tiny-t5", "config:tiny-llama"]:
        task_model = _task_model(name)
        batched, _ = generate(task_model, ROWS, batch_size=4, max_new_tokens=5)
        single = [generate(task_model, [row], batch_size=1, max_new_tokens=5)[0][0] for row in ROWS]
        assert batched == single


def test_local_directory_loads_like_a_hub_model(tmp_path):
    """The hub/local path: a model saved with save_pretrained loads by directory, with its family."""
    original = load_model("config:tiny-t5")
    original.model.save_pretrained(tmp_path)
    original.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.family == "seq2seq"
    for (name, a), (_, b) in zip(original.model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), name
