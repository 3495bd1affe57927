"""The bad-input catalogue: one case per line. Every user mistake prints one line naming the problem and
the fix, exits with code 2, shows no traceback, and leaves the results store exactly as it was."""

import hashlib
import json
import shutil

import pytest

from conftest import run_cli, store_of_one_run, write_suite


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _text(path, content: str):
    path.write_text(content, encoding="utf-8")
    return path


ROWS = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(20)]


def _catalogue(tmp):
    """name -> (command-line arguments after `peftbench`, text the one-line message must contain)."""
    suite = lambda name, **fields: write_suite(tmp / f"{name}.json", **fields)  # noqa: E731
    data = lambda name, rows: _jsonl(tmp / f"{name}.jsonl", rows)  # noqa: E731
    file_task = lambda path: suite(path.stem + "_suite", tasks=[f"file:{path}"])  # noqa: E731
    good = suite("good")
    latin = tmp / "latin.jsonl"
    latin.write_bytes('{"text": "caf\u00e9", "label": "x"}\n'.encode("latin-1"))
    return {
        # suites
        "unknown suite key": (["run", _text(tmp / "k.yaml", "models: [config:tiny-bert]\ntasks: [bbc_topic]\n"
                                             "methods: [lora]\nsead: [1]\n")], "unknown key 'sead'. Did you mean 'seeds'?"),
        "unknown nested key": (["run", suite("n", schedule={"warmup": 0.1})], "unknown key 'schedule.warmup'"),
        "YAML syntax error": (["run", _text(tmp / "y.yaml", "methods: [lora[r=8]]\n")], "quote method specs"),
        "YAML code tag": (["run", _text(tmp / "c.yaml", "models: !!python/object/apply:os.system ['echo hi']\n")],
                          "not valid YAML"),
        "suite is a list": (["run", _text(tmp / "l.yaml", "- lora\n- ia3\n")], "a suite must be a YAML mapping"),
        "missing required key": (["run", _text(tmp / "m.yaml", "models: [config:tiny-bert]\ntasks: [bbc_topic]\n")],
                                 "missing required key 'methods'"),
        "wrong type": (["run", suite("w", batch_size="big")], "bad value for 'batch_size'"),
        "zero batch size": (["run", suite("z", batch_size=0)], "bad value for 'batch_size'"),
        "unknown scale name": (["run", suite("s", scales=["huge"])], "unknown scale 'huge'"),
        "empty method list": (["run", suite("e", methods=[])], "bad value for 'methods'"),
        "no such suite": (["run", tmp / "nope.yaml"], "no suite file or built-in suite named"),
        "misspelt built-in suite": (["run", "quikstart"], "Did you mean 'quickstart'?"),
        # command-line flags
        "unknown flag": (["run", good, "--epochz", "3"], "No such option"),
        "bad device": (["run", good, "--device", "gpu"], "Invalid value for '--device'"),
        "seed not a number": (["run", good, "--seed", "abc"], "Invalid value for '--seed'"),
        "ray address without ray": (["run", good, "--ray-address", "auto"], "--ray-address needs --executor ray"),
        "bad scale override": (["run", good, "--scale", "huge"], "unknown scale 'huge'"),
        "params without a method": (["params", "config:tiny-t5"], "name at least one method"),
        # data files
        "missing data file": (["run", suite("f", tasks=["file:/nonexistent/train.jsonl"])], "does not exist"),
        "bad JSON line": (["run", file_task(_text(tmp / "bad.jsonl", '{"text": "a", "label": "x"}\n{oops\n'))],
                          "line 2 is not valid JSON"),
        "wrong encoding": (["run", file_task(latin)], "line 1 is not valid UTF-8; re-save the file as UTF-8"),
        "missing label column": (["run", file_task(data("nolabel", [{"text": "a"}]))], "has no 'label' column"),
        "no known columns": (["run", file_task(data("cols", [{"foo": 1}]))], "needs columns 'text' and 'label'"),
        "empty label": (["run", file_task(data("emptylabel", [{"text": "a", "label": ""}]))], "has an empty 'label'"),
        "one class only": (["run", file_task(data("oneclass", [{"text": "a", "label": "x"}] * 30))],
                           "has only one label"),
        "empty dataset": (["run", file_task(_text(tmp / "empty.jsonl", ""))], "has no rows"),
        "unseen test labels": (["run", suite("u", tasks=[{"file": str(data("train", ROWS)),
                                                          "test": str(data("test", [{"text": "x", "label": "c"}]))}])],
                               "labels not in"),
        "scale larger than data": (["run", suite("big", scales=[100000])], "use a scale of at most 2191"),
        "unknown file format": (["run", file_task(_text(tmp / "data.txt", "a,b\n"))], "has an unknown format"),
        # models
        "unknown config shape": (["run", suite("cs", models=["config:tiny-bart"])], "Did you mean 'tiny-bert'?"),
        "unknown offline model": (["run", suite("om", models=["offline:minilm"])], "unknown model 'offline:minilm'"),
        "not a model name": (["run", suite("nm", models=["bert"])], "use a Hugging Face hub id"),
        "generation on an encoder": (["run", suite("ge", tasks=["bbc_headline"])], "use a decoder or encoder-decoder"),
        "method does not fit the model": (["run", suite("bf", models=["config:tiny-t5"], methods=["bitfit"])],
                                          "use bitfit[add_bias=true]"),
        # methods and their options
        "unknown method": (["run", suite("um", methods=["loar"])], "unknown method 'loar'. Did you mean 'lora'?"),
        "unknown task": (["run", suite("ut", tasks=["bbc_topik"])], "Did you mean 'bbc_topic'?"),
        "negative rank": (["run", suite("nr", methods=["lora[r=-1]"])], "bad value for 'r'"),
        "unknown option": (["run", suite("uo", methods=["lora[rank=4]"])], "has no option 'rank'"),
        "layers out of range": (["run", suite("lr", methods=["lora[layers=9]"])], "the model has 2 layers per stack"),
        "unknown module group": (["run", suite("mg", methods=["lora[drop=self_atn]"])], "Did you mean 'self_attn'?"),
        "malformed method spec": (["run", suite("ms", methods=["lora[r]"])], "must be key=value"),
        "option is never code": (["run", suite("code", methods=["lora[r=__import__('os').getpid()]"])],
                                 "bad value for 'r'"),
        "bad targets": (["params", "config:tiny-t5", "--method", "lora[targets=qx]"], "unknown projection"),
        "duplicated option": (["run", suite("dup", methods=["lora[r=8,r=16]"])], "option 'r' is given twice"),
        "infinite method option": (["run", suite("inf", methods=["lora[alpha=inf]"])], "bad value for 'alpha'"),
        "NaN learning rate": (["run", _text(tmp / "nan.yaml", "models: [config:tiny-bert]\ntasks: [bbc_topic]\n"
                                              "methods: [lora]\nlearning_rates: {lora: .nan}\n")],
                              "bad value for 'learning_rates.lora'"),
        "infinite time cap": (["run", _text(tmp / "cap.yaml", "models: [config:tiny-bert]\ntasks: [bbc_topic]\n"
                                              "methods: [lora]\nmax_minutes: .inf\n")], "bad value for 'max_minutes'"),
        # names that become file names
        "suite name with folders": (["run", write_suite(tmp / "up.json", name="../../x")], "must be a plain name"),
        "absolute suite name": (["run", write_suite(tmp / "abs.json", name="/tmp/x")], "must be a plain name"),
        "NUL in suite name": (["run", write_suite(tmp / "nul.json", name="a\x00b")], "must be a plain name"),
        # prices and budgets
        "negative price": (["run", suite("np", price=-5)], "bad value for 'price'"),
        "zero price in the price table": (["run", suite("zp", price="free")], "usd_per_hour of 'free'"),
        # caught at plan time, not after training
        "out names a file": (["run", good, "--out", _text(tmp / "out.txt", "x")],
                             "is a file, not a folder; pass a folder path"),
        "superscript scale": (["run", good, "--scale", "\u00b2"], "unknown scale '\u00b2'"),
        "seed beyond 64 bits": (["run", good, "--seed", str(2**63)], "bad override for seeds"),
        "negative seed in a suite": (["run", suite("ns", seeds=[-1])], "bad value for 'seeds.0'"),
        "prompt longer than the positions": (["run", suite("pos", methods=["prompt_tuning[tokens=500]"])],
                                             "= 548 positions, but config:tiny-bert has 512"),
        "input longer than the positions": (["run", suite("len", max_input_length=600)], "has 512; lower max_input"),
        # data read exactly: no silent coercions
        "labels 0 and 0.0": (["run", file_task(data("floats", [{"text": f"t{i}", "label": [0, 0.0][i % 2]}
                                                              for i in range(20)]))], "a number with a decimal point"),
        "list label": (["run", file_task(data("lists", [{"text": "a", "label": ["x"]}] * 20))], "'label' is a list"),
        # one label rule for CSV and JSONL: decimals are refused in either, as numbers or as text
        "CSV decimal labels": (["run", file_task(_text(tmp / "scores.csv", "text,label\n" + "".join(
            f"t{i},{i / 7:.3f}\n" for i in range(20))))], "a number with a decimal point in 20 of 20 rows (row 1: "),
        "CSV labels 1 and 1.0": (["run", file_task(_text(tmp / "ones.csv", "text,label\n" + "".join(
            f"t{i},{['1', '1.0'][i % 2]}\n" for i in range(20))))], "in 10 of 20 rows (row 2: \"1.0\")"),
        "JSON decimal label as text": (["run", file_task(data("strfloat", [
            {"text": f"t{i}", "label": ["1", "2.5"][i % 2]} for i in range(20)]))], "in 10 of 20 rows"),
        # a test file must not repeat the training file's inputs, unless allowed
        "test file repeats training inputs": (
            ["run", good, "--task", f"file:{data('train_o', ROWS)}", "--test-file",
             data("test_o", [{"text": t, "label": "a"} for t in ("t0", "t1 ", "t2", "x")])],
            "shares 3 of its 4 distinct inputs with"),
        "suite test file repeats training inputs": (
            ["run", suite("ov", tasks=[{"file": str(data("train_s", ROWS)), "test": str(data("test_s", ROWS[:5]))}])],
            "or pass --allow-overlap"),
        "allow overlap without a test file": (
            ["run", good, "--task", f"file:{data('train_a', ROWS)}", "--allow-overlap"],
            "add --test-file PATH, or drop --allow-overlap"),
        "allow_overlap without test in a suite": (["run", suite("ovs", tasks=[{"file": str(data("train_b", ROWS)),
                                                                               "allow_overlap": True}])],
                                                  "allow_overlap concerns a test file"),
        "misspelt file task key": (
            ["run", suite("tk", tasks=[{"file": str(data("train_k", ROWS)), "tset": "t.jsonl"}])],
            "unknown key 'tasks.0.tset'. Did you mean 'test'?"),
        "repeated YAML key": (["run", _text(tmp / "twice.yaml", "models: [config:tiny-bert]\ntasks: [bbc_topic]\n"
                                            "epochs: 3\nmethods: [lora]\nepochs: 30\n")],
                              "at line 5 (the key 'epochs' appears twice; keep one)"),
        "repeated YAML key in a --set": (["run", good, "--set", "schedule={peak_factor: 2, peak_factor: 5}"],
                                         "the key 'peak_factor' appears twice"),
        "repeated CSV column": (["run", file_task(_text(tmp / "twice.csv", "text,label,label\n" + "a,x,y\n" * 20))],
                                "the header repeats column 'label'; give each column one name"),
        "unquoted comma in a CSV text": (["run", file_task(_text(tmp / "comma.csv", "text,label\n" + "good,x\nbad,y\n"
                                                                    * 10 + "fine, then not,x\n"))],
                                         "line 22 has 3 fields but the header has 2; quote texts that contain commas"),
        "object text": (["run", file_task(data("objects", [{"text": {"a": 1}, "label": "x"}] * 20))],
                        "'text' is an object"),
        # nonsense settings: each range and type is declared once on the typed suite (or by the method), and every
        # mapping's keys must name something of the suite
        "zero epochs": (["run", suite("e0", epochs=0)], "bad value for 'epochs': Input should be greater than"),
        "negative epochs": (["run", suite("en", epochs=-2)], "bad value for 'epochs'"),
        "zero epochs for a scale": (["run", suite("es", epochs={"low": 0})], "bad value for 'epochs.low'"),
        "misspelt epochs scale": (["run", suite("ek", epochs={"lowe": 3})],
                                  "unknown scale 'lowe'. Did you mean 'low'?"),
        "epochs set to zero by flag": (["run", good, "--set", "epochs=0"], "--set epochs=0: bad value for 'epochs'"),
        "zero learning rate": (["run", suite("lr0", learning_rates={"lora": 0})],
                               "bad value for 'learning_rates.lora': Input should be greater than 0"),
        "learning rate above 1": (["run", suite("lr9", learning_rates={"lora": 5})],
                                  "bad value for 'learning_rates.lora': Input should be less than or equal to 1"),
        "zero learning rate in a sweep": (["run", suite("sw0", sweep={"lr": [0, 1e-3]})], "bad value for 'sweep.lr.0'"),
        "misspelt learning_rates key": (["run", suite("lrk", learning_rates={"lroa": 1e-3})],
                                        "learning_rates: 'lroa' names no method of the suite. Did you mean 'lora'?"),
        "misspelt model in method_overrides": (
            ["run", suite("mo", method_overrides={"config:tiny-brt": {"lora": "ia3"}})],
            "method_overrides: unknown model 'config:tiny-brt'. Did you mean 'tiny-bert'?"),
        "misspelt method in tune.space": (["run", suite("ts", tune={"space": {"loar": {"r": [4, 8]}}})],
                                          "tune.space: 'loar' names no method of the suite. Did you mean 'lora'?"),
        "boolean batch size": (["run", suite("bb", batch_size=True)], "bad value for 'batch_size': Input should be a"
                                                                      " valid integer"),
        "quoted batch size": (["run", suite("qb", batch_size="8")], "bad value for 'batch_size'"),
        "float batch size": (["run", suite("fb", batch_size=8.0)], "bad value for 'batch_size'"),
        "boolean seed": (["run", suite("bs", seeds=[True])], "bad value for 'seeds.0'"),
        "boolean time cap": (["run", suite("bt", max_minutes=True)], "bad value for 'max_minutes'"),
        "enormous batch size": (["run", suite("hb", batch_size=10**12)], "bad value for 'batch_size'"),
        "enormous max_target_length": (["run", suite("ht", max_target_length=10**9)],
                                       "bad value for 'max_target_length': Input should be less than or equal to"),
        "enormous min_steps": (["run", suite("hm", min_steps=10**12)], "bad value for 'min_steps'"),
        "absurd LoRA rank": (["run", suite("ar", methods=["lora[r=100000]"])],
                             "r=100000 is above the width 32 of the layer"),
        "LoRA rank above the layer width": (["run", suite("aw", methods=["lora[r=33]"])], "use r of at most 32"),
        "AdaLoRA rank above the layer width": (["run", suite("aa", methods=["adalora[init_r=64]"])],
                                               "use init_r of at most 32"),
        "tuned rank above the layer width": (
            ["tune", suite("tw", tune={"trials": 2, "space": {"lora": {"r": [8, 64]}}})],
            "tune.space: r=64 does not fit config:tiny-bert"),
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store holding one finished run, so 'unchanged' means something."""
    return store_of_one_run(tmp_path_factory.mktemp("store"))[1]


def _digest(folder) -> dict[str, str]:
    """Every file under the store's folder (the store, its journal, the runs' saved weights)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


CASE_NAMES = [
    "unknown suite key", "unknown nested key", "YAML syntax error", "YAML code tag", "suite is a list",
    "missing required key", "wrong type", "zero batch size", "unknown scale name", "empty method list",
    "no such suite", "misspelt built-in suite", "unknown flag", "bad device", "seed not a number",
    "ray address without ray", "bad scale override", "params without a method", "missing data file",
    "bad JSON line", "wrong encoding", "missing label column", "no known columns", "empty label",
    "one class only", "empty dataset", "unseen test labels", "scale larger than data", "unknown file format",
    "unknown config shape", "unknown offline model", "not a model name", "generation on an encoder",
    "method does not fit the model", "unknown method", "unknown task", "negative rank", "unknown option",
    "layers out of range", "unknown module group", "malformed method spec", "option is never code", "bad targets",
    "duplicated option", "infinite method option", "NaN learning rate", "infinite time cap", "suite name with folders",
    "absolute suite name", "NUL in suite name", "negative price", "zero price in the price table", "out names a file",
    "superscript scale", "seed beyond 64 bits", "negative seed in a suite", "prompt longer than the positions",
    "input longer than the positions", "labels 0 and 0.0", "list label", "object text", "CSV decimal labels",
    "CSV labels 1 and 1.0", "JSON decimal label as text", "test file repeats training inputs",
    "suite test file repeats training inputs", "allow overlap without a test file",
    "allow_overlap without test in a suite", "misspelt file task key", "repeated YAML key",
    "repeated YAML key in a --set", "repeated CSV column", "unquoted comma in a CSV text",
    "zero epochs", "negative epochs", "zero epochs for a scale", "misspelt epochs scale", "epochs set to zero by flag",
    "zero learning rate", "learning rate above 1", "zero learning rate in a sweep", "misspelt learning_rates key",
    "misspelt model in method_overrides", "misspelt method in tune.space", "boolean batch size", "quoted batch size",
    "float batch size", "boolean seed", "boolean time cap", "enormous batch size", "enormous max_target_length",
    "enormous min_steps", "absurd LoRA rank", "LoRA rank above the layer width", "AdaLoRA rank above the layer width",
    "tuned rank above the layer width",
]
LEASES = ["0", "-5", "nan", "inf", "soon", "1e300"]


def test_catalogue_lists_every_case(tmp_path):
    assert sorted(_catalogue(tmp_path)) == sorted(CASE_NAMES) and len(CASE_NAMES) >= 30


def _assert_refused(tmp_path, store, args, message):
    folder = tmp_path / "store"
    shutil.copytree(store.parent, folder)
    before = _digest(folder)
    extra = ["--store", folder / "results.db"] if args[0] in ("run", "tune") else []
    code, out, err = run_cli(*args, *extra)
    assert code == 2, err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert "Traceback" not in err and out == ""
    assert _digest(folder) == before


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input(tmp_path, store, case, monkeypatch):
    monkeypatch.setenv("PEFTBENCH_PRICES", str(_text(tmp_path / "prices.yaml", "free: {usd_per_hour: 0}\n")))
    args, message = _catalogue(tmp_path)[case]
    _assert_refused(tmp_path, store, args, message)


@pytest.mark.parametrize("lease", LEASES)
def test_a_bad_lease_setting_is_refused_at_start(tmp_path, store, monkeypatch, lease):
    monkeypatch.setenv("PEFTBENCH_LEASE_SECONDS", lease)
    _assert_refused(tmp_path, store, ["run", write_suite(tmp_path / "lease.json")],
                    f"PEFTBENCH_LEASE_SECONDS='{lease}' is not a finite number of at least 1 and at most 604800")


def test_results_without_a_store(tmp_path):
    code, _, err = run_cli("results", "--store", tmp_path / "none.db")
    assert code == 2 and "run `peftbench run` first" in err
