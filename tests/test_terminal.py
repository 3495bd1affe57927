"""Terminal output at 80 columns: no number or name is cut, optional columns give way and are named,
`--wide` shows them all, COLUMNS is respected when piped. `results` and `params` are pinned exactly."""

import pytest
from conftest import run_cli

from peftbench.store import Store
from peftbench.terminal import Col, layout, render

SPEC = {"model": "offline:minilm-l6", "task": "bbc_topic", "scale": "low", "n_train": 100, "lr": 3e-4,
        "peak_factor": 10.0, "final_factor": 1.0,
        # the rest of a run spec's shape, which the store's reader checks (store.SPEC_SHAPE)
        "task_source": "offline", "method_options": {}, "split_seed": 0, "val_cap": 100, "test_cap": 500,
        "max_input_length": 128, "max_target_length": 8, "eval": "classify", "group_by_length": False, "epochs": 10,
        "batch_size": 16, "grad_accum": 1, "patience": 2, "warmup_ratio": 0.1, "weight_decay": 0.0,
        "max_grad_norm": 1.0, "max_minutes": None}
SCORES = {("full", 0): 0.925, ("full", 1): 0.9325, ("lora_scaling[r=2,s=1,targets=qkvo]", 0): 0.9281,
          ("lora_scaling[r=2,s=1,targets=qkvo]", 1): 0.93, ("ia3[layout=tfew]", 0): 0.9544}


def small_store(path):
    """A store of five finished training runs, a majority baseline and a failed run, with fixed numbers (written
    through the Store API)."""
    store = Store(path)
    for i, ((spec, seed), score) in enumerate(SCORES.items()):
        run_id = f"run{i}"
        store.claim(run_id, "train", "demo", {**SPEC, "method": spec.split("[")[0], "method_spec": spec,
                                              "seed": seed}, "me", 0.0, 60)
        store.end(run_id, "me", "finished", {
            "primary_metric": "accuracy", "score": score, "wall_s": 61.5 + 100 * i, "trainable_params": 1000 * (i + 1),
            "total_params": 22_000_000, "best_epoch": 3 + i, "stopped_by": "early_stopping",
            "peak_memory_bytes": 1_500_000_000 + i, "train_tokens_per_s": 1234.5, "infer_tokens_per_s": 3456.7})
    store.claim("majority", "baseline", "demo", {**SPEC, "method": "majority", "method_spec": "majority", "seed": 0},
                "me", 0.0, 60)
    store.end("majority", "me", "finished", {"primary_metric": "accuracy", "score": 0.2135, "wall_s": 2.0})
    store.claim("broken", "train", "demo", {**SPEC, "method": "prompt_tuning", "method_spec": "prompt_tuning[tokens=20]",
                                            "seed": 0}, "me", 0.0, 60)
    store.end("broken", "me", "failed", {}, "RuntimeError: CUDA out of memory. Tried to allocate 20.00 MiB")
    store.close()
    return path


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def results_at_80(tmp_path, monkeypatch, heading: str, *flags) -> tuple[str, list[str]]:
    """`results` of the small store at 80 columns: its first line (which a long store path may wrap onto more),
    without spaces, and the lines from the table's heading on."""
    monkeypatch.setenv("COLUMNS", "80")
    store = small_store(tmp_path / "small.db")
    code, out, err = run_cli("results", "--store", store, *flags)
    assert code == 0, err
    lines = _lines(out)
    title = lines.index(heading)
    return "".join(lines[:title]).replace(" ", "").replace(str(store).replace(" ", ""), "STORE"), lines[title:]


def test_results_at_80_columns_is_pinned(tmp_path, monkeypatch):
    first, lines = results_at_80(tmp_path, monkeypatch, "offline:minilm-l6 · bbc_topic · low (100 training examples)")
    assert first == "4configurationsof7runsinSTORE"
    assert lines == [
        "offline:minilm-l6 · bbc_topic · low (100 training examples)",
        "method                              seeds       accuracy  learned    time",
        "─────────────────────────────────────────────────────────────────────────",
        "ia3[layout=tfew]                        1          0.954  unchecked  7:42",
        "lora_scaling[r=2,s=1,targets=qkvo]      2  0.929 ± 0.001  unchecked  5:12",
        "full                                    2  0.929 ± 0.005  unchecked  1:52",
        "majority                                1          0.213  baseline   0:02",
        "unchecked (runs stored without per-row test results): ia3[layout=tfew],",
        "lora_scaling[r=2,s=1,targets=qkvo], full.",
        "prompt_tuning[tokens=20] seed 0 failed: RuntimeError: CUDA out of memory. Tried",
        "to allocate 20.00 MiB",
        "learned: yes, significantly above the best baseline on the same test rows",
        "(paired bootstrap, 95%); NO, not: it learned nothing usable and is never",
        "recommended; unchecked, not testable (why: under its table). Score: mean ±",
        "sample std over seeds; time, peak MB, tok/s: means. `peftbench results --seeds`",
        "lists every run with its id.",
        "not shown at 80 columns: trainable, best epoch, peak MB, lr, peak lr, train",
        "tok/s, infer tok/s (--wide shows every column)",
    ]


def test_results_seeds_at_80_columns_is_pinned(tmp_path, monkeypatch):
    first, lines = results_at_80(tmp_path, monkeypatch, "offline:minilm-l6 · bbc_topic · n 100", "--seeds")
    assert first == "6runsinSTORE"
    assert lines == [
        "offline:minilm-l6 · bbc_topic · n 100",
        "method                              seed  accuracy  run     time  trainable",
        "───────────────────────────────────────────────────────────────────────────",
        "full                                   0     0.925  run0    1:02      0.00%",
        "full                                   1     0.932  run1    2:42      0.01%",
        "ia3[layout=tfew]                       0     0.954  run4    7:42      0.02%",
        "lora_scaling[r=2,s=1,targets=qkvo]     0     0.928  run2    4:22      0.01%",
        "lora_scaling[r=2,s=1,targets=qkvo]     1     0.930  run3    6:02      0.02%",
        "prompt_tuning[tokens=20]               0    failed  broken                –",
        "prompt_tuning[tokens=20] seed 0 failed: RuntimeError: CUDA out of memory. Tried",
        "to allocate 20.00 MiB",
        "not shown at 80 columns: best epoch, stopped by, peak MB, lr, peak lr, train",
        "tok/s, infer tok/s, train MFU (--wide shows every column)",
    ]


def test_params_at_80_columns_is_pinned(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run_cli("params", "config:tiny-t5", "--method", "full", "--method", "lora",
                             "--method", "ia3[layout=tfew]", "--method", "prompt_tuning[tokens=4]",
                             "--method", "bitfit[add_bias=true]")
    assert code == 0, err
    assert _lines(out) == [
        "parameters of config:tiny-t5 (2,003,200 in the base model)",
        "                                                changed",
        "                                        % of      after           adapter",
        "spec                     trainable      base      merge  added      bytes",
        "─────────────────────────────────────────────────────────────────────────",
        "full                     2,003,200  100.0000  2,003,200      0  8,012,800",
        "lora                         6,144    0.3067     12,288  6,144     24,576",
        "ia3[layout=tfew]               640    0.0319     20,480  1,152      4,608",
        "prompt_tuning[tokens=4]        128    0.0064   no merge    128        512",
        "bitfit[add_bias=true]        1,408    0.0703      1,408  1,408      5,632",
        "trainable: parameters the optimizer updates; changed after merge: base-weight",
        "entries that differ once the method is folded in; added: new tensors (frozen",
        "ones too); adapter bytes: the saved checkpoint.",
        "not shown at 80 columns: added %, changed % (--wide shows every column)",
    ]


def test_params_of_a_large_model_keeps_its_counts_whole(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run_cli("params", "config:flan-t5-xl", "--method", "full", "--method", "lora_scaling[r=2,s=1,targets=qkvo]")
    assert code == 0, err
    assert max(map(len, _lines(out))) <= 80
    _cells_whole(out, ["2,849,757,184", "lora_scaling[r=2,s=1,targets=qkvo]", "3,538,944", "1,207,959,552"])


def _cells_whole(out: str, values: list[str]) -> None:
    """Every value appears whole on some line: nothing was cut or folded."""
    for value in values:
        assert any(value in line for line in out.splitlines()), value


@pytest.mark.parametrize("command,names", [
    (["methods"], ["parallel_adapter", "compacter_pp", "prefix_tuning", "lora_scaling", "prompt_tuning"]),
    (["tasks"], ["finefood_sentiment", "finefood_yesno", "cnn_dailymail", "bbc_headline"]),
    (["prices"], ["gcp-v100-n1-standard-8", "gcp-e2-standard-2", "1,247 s", "53,731 s"]),
    (["suites"], ["hamilton2023-offline", "lialin2024-cnn", "pu2023-ablations", "pu2023-offline"]),
])
@pytest.mark.parametrize("width", [80, 60])
def test_listings_fit_without_cutting_a_name(monkeypatch, command, names, width):
    monkeypatch.setenv("COLUMNS", str(width))
    code, out, err = run_cli(*command)
    assert code == 0, err
    assert max(map(len, _lines(out))) <= width and "…" not in out
    _cells_whole(out, names)


def test_wide_shows_every_column_and_piped_output_without_columns_is_wide(tmp_path, monkeypatch):
    store = small_store(tmp_path / "small.db")
    monkeypatch.setenv("COLUMNS", "80")
    code, narrow, _ = run_cli("results", "--store", store)
    code, wide, _ = run_cli("results", "--store", store, "--wide")
    assert "1,234" not in narrow and "--wide shows every column" in narrow
    assert "1,234" in wide and "3,457" in wide and "peak lr" in wide and "3e-3" in wide
    assert "--wide shows" not in wide
    monkeypatch.delenv("COLUMNS")
    code, piped, _ = run_cli("results", "--store", store)
    assert "1,234" in piped and max(map(len, _lines(piped))) > 80  # a file gets room for every column


def test_layout_drops_optional_columns_last_first_and_never_required_ones():
    cols = [Col("method", "name"), Col("score", "number"), Col("a", "number", optional=True),
            Col("b", "number", optional=True), Col("note", "text")]
    rows = [["lora_scaling[r=2,s=1,targets=qkvo]", "0.925", "1" * 12, "2" * 12, "some words to wrap here"]]
    assert layout(cols, rows, 200) == [0, 1, 2, 3, 4]
    assert layout(cols, rows, 80) == [0, 1, 2, 4]
    assert layout(cols, rows, 60) == [0, 1, 4]
    assert layout(cols, rows, 30) == [0, 1, 4]  # too narrow even so: the name folds, nothing is dropped
    _, lines = render("t", cols, rows, 60)
    assert lines == ["not shown at 60 columns: a, b (--wide shows every column)"]


def test_a_number_is_never_cut_even_when_names_must_fold(monkeypatch):
    from rich.console import Console

    cols = [Col("method", "name"), Col("trainable", "number")]
    rows = [["a_very_long_method_name[with=options,and=more]", "2,849,757,184"]]
    table, _ = render(None, cols, rows, 30)
    console = Console(width=30, record=True)
    console.print(table)
    text = console.export_text()
    assert "2,849,757,184" in text and max(map(len, text.splitlines())) <= 30
    body = text.splitlines()[2:]  # below the header and its rule
    first = "".join(line.split("  ")[0].strip() for line in body)
    assert first == "a_very_long_method_name[with=options,and=more]"  # folded onto lines, not cut
