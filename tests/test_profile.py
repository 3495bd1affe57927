"""`peftbench profile` on CPU: the JSON's shape, positive measurements, full tuning first at 100%, and bad
input refused before anything is measured. Tiny shapes and two steps keep it to seconds (each method runs
in its own process)."""

import pytest
from conftest import run_cli, run_json

from peftbench.profile import default_dtype

TINY = ("--batch-size", "2", "--seq-len", "16", "--target-len", "4", "--steps", "2", "--warmup", "1")
MEASURED = ("peak_memory_bytes", "train_tokens_per_s", "infer_tokens_per_s", "infer_merged_tokens_per_s")


def test_profile_json_lists_full_first_at_100_percent():
    result = run_json("profile", "config:tiny-t5", "--method", "lora", "--method", "ia3", "--json", "--device", "cpu",
                      "--dtype", "fp32", *TINY)  # fp32 named: the default follows the CPU (test below)
    assert result["model"] == "config:tiny-t5" and result["family"] == "seq2seq" and result["dtype"] == "fp32" and result["reference"] == "full"
    assert result["device"].startswith("cpu") and result["versions"]["torch"]
    assert result["settings"] == {"model": "config:tiny-t5", "batch_size": 2, "seq_len": 16, "target_len": 4,
                                  "steps": 2, "warmup": 1, "dtype": "fp32", "random_init": False, "device": "cpu",
                                  "gradient_checkpointing": False}
    full, lora, ia3 = result["methods"]
    assert [m["method"] for m in result["methods"]] == ["full", "lora", "ia3"]
    assert all(m["status"] == "ok" for m in result["methods"])
    assert full["pct_of_full"]["train_tokens_per_s"] == 100 and full["pct_of_full"]["peak_memory_bytes"] == 100
    assert full["infer_merged_tokens_per_s"] is None  # full tuning has nothing to fold
    for entry in (lora, ia3):
        assert entry["mergeable"] and entry["train_steps"] == 2
        assert 0 < entry["trainable_params"] < full["trainable_params"] == full["total_params"]
        for field in MEASURED:
            assert entry[field] > 0 and entry["pct_of_full"][field] > 0
        assert entry["peak_memory_kind"] == "cpu_peak_rss_growth"
        assert len(entry["train_loss_warmup_then_timed"]) == 2
    # The reference's own figures are positive too, and the percentages are ratios to them.
    assert all(full[field] > 0 for field in MEASURED[:3])
    assert abs(lora["pct_of_full"]["train_tokens_per_s"]
               - 100 * lora["train_tokens_per_s"] / full["train_tokens_per_s"]) < 1e-9


def test_profile_without_reference_has_no_percentages():
    result = run_json("profile", "config:tiny-bert", "--method", "bitfit", "--no-reference", "--json", *TINY)
    (entry,) = result["methods"]
    assert entry["method"] == "bitfit" and entry["status"] == "ok" and entry["pct_of_full"] is None
    assert entry["infer_merged_tokens_per_s"] is None and entry["train_tokens_per_s"] > 0


def test_profile_bad_input_exits_2_with_one_line():
    cases = [(("config:tiny-t5", "--method", "lorra"), "unknown method 'lorra'. Did you mean 'lora'?"),
             (("config:tiny-t5", "--method", "lora", "--seq-len", "0"), "--seq-len 0 is too small"),
             (("config:tiny-t5", "--method", "bitfit"), "use bitfit[add_bias=true]"),  # does not fit T5
             (("config:tiny-bert", "--method", "lora", "--seq-len", "600"), "at most 512 positions")]
    for args, message in cases:
        code, out, err = run_cli("profile", *args, "--json")
        assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1, (args, err)


@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "fp32")])
def test_the_default_dtype_follows_the_cpu_as_run_does(monkeypatch, native, expected):
    import peftbench.precision

    monkeypatch.setattr(peftbench.precision, "cpu_bf16_support", lambda: {"native": native})
    assert default_dtype("cpu") == expected
    assert default_dtype("cuda") == "bf16"
