import json

import pytest

from peftbench.errors import UserError
from peftbench.tasks import get_task


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_jsonl_classification_with_test_file(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [{"text": f"t{i}", "label": ["a", "b"][i % 2]} for i in range(20)])
    test = _jsonl(tmp_path / "test.jsonl", [{"text": "x", "label": "a"}])
    task = get_task(f"file:{train}", str(test))
    data = task.load()
    assert task.kind == "classification" and task.labels == ["a", "b"]
    assert len(data.train) == 20 and data.test == [{"text": "x", "label": "a"}]
    assert task.prompt(data.train[0]) == "t0" and task.target(data.train[1]) == "b"


def test_csv_generation(tmp_path):
    path = tmp_path / "gen.csv"
    path.write_text("input,target\nhello,world\n", encoding="utf-8")
    task = get_task(f"file:{path}")
    assert task.kind == "generation" and task.target(task.load().train[0]) == "world"


@pytest.mark.parametrize("content,message", [
    ('{"text": "a", "label": "x"}\n{"text": oops}\n', "line 2 is not valid JSON"),
    ('{"text": "a"}\n', "no 'label' column"),
    ('{"text": "a", "label": ""}\n{"text": "b", "label": "y"}\n', "row 1 has an empty 'label'"),
    ('{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n', "has only one label"),
    ("", "has no rows"),
    ('{"foo": 1}\n', "needs columns 'text' and 'label'"),
])
def test_bad_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "data.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        get_task(f"file:{path}")


def test_wrong_encoding_and_unseen_test_labels(tmp_path):
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"text": "caf\u00e9", "label": "x"}\n'.encode("latin-1"))
    with pytest.raises(UserError, match="line 1 is not valid UTF-8"):
        get_task(f"file:{latin}")
    train = _jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    test = _jsonl(tmp_path / "test.jsonl", [{"text": "c", "label": "z"}])
    with pytest.raises(UserError, match=r"labels not in .*\['z'\]"):
        get_task(f"file:{train}", str(test))


def test_file_content_is_read_exactly(tmp_path):
    """Separators inside strings are content: U+2028 and U+0085 in a JSON string, a quoted newline or a
    U+2028 in a CSV field; surrounding spaces of a text are kept too (only a label's are not part of it)."""
    texts = ["line\u2028separator", "next\u0085line", "  spaced text  "]
    jsonl = _jsonl(tmp_path / "u.jsonl", [{"text": t, "label": "ab"[i % 2]} for i, t in enumerate(texts * 4)])
    assert [row["text"] for row in get_task(f"file:{jsonl}").load().train[:3]] == texts
    csv_path = tmp_path / "q.csv"
    csv_path.write_text('text,label\n"first line\nsecond line",a\n"with\u2028separator",b\n"x, y", a \n',
                        encoding="utf-8")
    train = get_task(f"file:{csv_path}").load().train
    assert train == [{"text": "first line\nsecond line", "label": "a"}, {"text": "with\u2028separator", "label": "b"},
                     {"text": "x, y", "label": "a"}]


def test_integer_and_boolean_labels_are_one_class_each(tmp_path):
    rows = [{"text": f"t{i}", "label": i % 2} for i in range(10)] + [{"text": "b", "label": True}]
    task = get_task(f"file:{_jsonl(tmp_path / 'ints.jsonl', rows)}")
    assert task.labels == ["0", "1", "true"]
