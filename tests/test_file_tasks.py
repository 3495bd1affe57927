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


def test_columns_of_another_name_are_mapped(tmp_path):
    rows = [{"review": f"text {i}", "stars": "ab"[i % 2], "id": i} for i in range(20)]
    train = _jsonl(tmp_path / "reviews.jsonl", rows)
    task = get_task(f"file:{train}", None, {"text": "review", "label": "stars"})
    assert task.kind == "classification" and task.labels == ["a", "b"]
    assert task.load().train[:2] == [{"text": "text 0", "label": "a"}, {"text": "text 1", "label": "b"}]
    assert "text=review, label=stars" in task.source  # the mapping is part of the run's identity
    with pytest.raises(UserError, match=r"has no column body \(text_field\); its columns are \['id', 'review', 'stars'\]"):
        get_task(f"file:{train}", None, {"text": "body", "label": "stars"})
    generation = _jsonl(tmp_path / "pairs.jsonl", [{"question": "q", "answer": "a"}] * 12)
    assert get_task(f"file:{generation}", None, {"input": "question", "target": "answer"}).kind == "generation"


def test_a_path_given_as_a_task_name_is_told_to_use_file(tmp_path):
    with pytest.raises(UserError, match=r"unknown task 'reviews.jsonl'; for your own data file write file:reviews.jsonl"):
        get_task("reviews.jsonl")


def test_labels_follow_one_rule_in_csv_and_jsonl(tmp_path):
    """Integers, true/false and names are classes as written in either format; a decimal is refused in
    either, whether a JSON number, a JSON string or CSV text, naming how many rows hold one."""
    labels = [0, 1, "pos", True]
    jsonl = _jsonl(tmp_path / "a.jsonl", [{"text": f"t{i}", "label": labels[i % 4]} for i in range(12)])
    csv_path = tmp_path / "a.csv"
    csv_path.write_text("text,label\n" + "".join(f"t{i},{['0', '1', 'pos', 'true'][i % 4]}\n" for i in range(12)),
                        encoding="utf-8")
    assert get_task(f"file:{jsonl}").labels == get_task(f"file:{csv_path}").labels == ["0", "1", "pos", "true"]
    for name, label in [("number.jsonl", 1.0), ("string.jsonl", "1.0"), ("exponent.jsonl", "1e3")]:
        path = _jsonl(tmp_path / name, [{"text": f"t{i}", "label": [1, label][i % 2]} for i in range(12)])
        with pytest.raises(UserError, match=r"'label' is a number with a decimal point in 6 of 12 rows \(row 2: "):
            get_task(f"file:{path}")
    csv_path.write_text("text,label\n" + "".join(f"t{i},{i / 3:.2f}\n" for i in range(12)), encoding="utf-8")
    with pytest.raises(UserError, match=r"in 12 of 12 rows \(row 1: \"0.00\"\)"):
        get_task(f"file:{csv_path}")


def test_a_test_file_repeating_training_inputs_is_counted(tmp_path):
    """Refused with the counts by default; allowed, the counts are a note the plan prints and part of the
    task's description. Inputs are compared with runs of whitespace as one space."""
    train = _jsonl(tmp_path / "train.jsonl", [{"text": f"review {i}", "label": "ab"[i % 2]} for i in range(20)])
    test = _jsonl(tmp_path / "test.jsonl",
                  [{"text": text, "label": "a"} for text in ("review  0", "review 1\n", "new", "new")])
    with pytest.raises(UserError, match=r"shares 2 of its 3 distinct inputs with .*train.jsonl'.*--allow-overlap"):
        get_task(f"file:{train}", str(test))
    task = get_task(f"file:{train}", str(test), allow_overlap=True)
    assert task.notes == (f"test file '{test}' shares 2 of its 3 distinct inputs with '{train}'"
                          " (allowed by --allow-overlap)",)
    assert task.notes[0] in task.description
    assert get_task(f"file:{train}", str(_jsonl(tmp_path / "fresh.jsonl", [{"text": "new", "label": "a"}]))).notes == ()


def test_the_plan_prints_an_allowed_overlap(tmp_path):
    from conftest import run_cli

    train = _jsonl(tmp_path / "train.jsonl", [{"text": f"review {i}", "label": "ab"[i % 2]} for i in range(20)])
    test = _jsonl(tmp_path / "test.jsonl", [{"text": "review 3", "label": "b"}, {"text": "new", "label": "a"}])
    args = ["run", "--model", "config:tiny-bert", "--task", f"file:{train}", "--test-file", test, "--method", "lora",
            "--scale", "8", "--store", tmp_path / "s.db", "--dry-run"]
    code, out, err = run_cli(*args, "--allow-overlap")
    assert code == 0 and f"note: test file '{test}' shares 1 of its 2 distinct inputs with '{train}'" in err
    assert "lora" in out and not (tmp_path / "s.db").exists()
