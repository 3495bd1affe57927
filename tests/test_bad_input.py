"""Each user mistake: one line naming the problem and the fix, exit code 2, no traceback, store untouched."""

import json

import pytest

from conftest import run_cli, write_suite


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _cases(tmp_path):
    no_label = _jsonl(tmp_path / "no_label.jsonl", [{"text": "a"}, {"text": "b"}])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text("models: [config:tiny-bert]\ntasks: [bbc_topic]\nmethods: [lora]\nsead: [1]\n")
    return {
        "unknown suite key": ([bad_key], "unknown key 'sead'. Did you mean 'seeds'?"),
        "unknown method": ([write_suite(tmp_path / "m.json", methods=["loar"])], "unknown method 'loar'. Did you mean 'lora'?"),
        "unknown task": ([write_suite(tmp_path / "t.json", tasks=["bbc_topik"])], "unknown task 'bbc_topik'. Did you mean 'bbc_topic'?"),
        "unknown model": ([write_suite(tmp_path / "d.json", models=["config:tiny-bart"])], "unknown model 'config:tiny-bart'. Did you mean 'tiny-bert'?"),
        "unknown offline model": ([write_suite(tmp_path / "o.json", models=["offline:minilm"])], "unknown model 'offline:minilm'"),
        "missing file": ([write_suite(tmp_path / "f.json", tasks=["file:/nonexistent/train.jsonl"])], "does not exist; check the path"),
        "missing label column": ([write_suite(tmp_path / "l.json", tasks=[f"file:{no_label}"])], "has no 'label' column; add a 'label' field"),
        "empty dataset": ([write_suite(tmp_path / "e.json", tasks=[f"file:{empty}"])], "has no rows; add examples"),
        "scale larger than data": ([write_suite(tmp_path / "s.json", scales=[100000])], "use a scale of at most 2193"),
        "missing suite": ([tmp_path / "nope.yaml"], "no suite file or built-in suite named"),
        "unknown method option": ([write_suite(tmp_path / "x.json", methods=["lora[rank=4]"])], "method 'lora' has no option 'rank'"),
        "generation on an encoder": ([write_suite(tmp_path / "g.json", tasks=["bbc_headline"])], "use a decoder or encoder-decoder model"),
        "unknown flag": (["--epochz", "3"], "No such option"),
    }


CASES = ["unknown suite key", "unknown method", "unknown task", "unknown model", "unknown offline model",
         "missing file", "missing label column", "empty dataset", "scale larger than data", "missing suite",
         "unknown method option", "generation on an encoder", "unknown flag"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input(tmp_path, case):
    args, message = _cases(tmp_path)[case]
    store = tmp_path / "store" / "results.db"
    code, out, err = run_cli("run", *args, "--store", store)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert "Traceback" not in err and out == ""
    assert not store.parent.exists()


def test_results_without_a_store(tmp_path):
    code, _, err = run_cli("results", "--store", tmp_path / "none.db")
    assert code == 2 and "run `peftbench run` first" in err
