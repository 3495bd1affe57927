"""bf16 autocast where the hardware computes bf16 (fp32 master weights everywhere), and FLOPs / MFU per run:
the capability check decides `cpu_bf16: auto`, the FLOP count reproduces the textbook formula, and MFU of a
real tiny run lies in (0, 1)."""

import pytest
import torch

from conftest import TINY_MODELS, run_json, write_suite
from peftbench import precision
from peftbench.config import MethodSpec
from peftbench.flops import flops_per_token
from peftbench.methods import METHODS
from peftbench.methods.base import Context, merged_copy
from peftbench.models import load_model, model_config

CPU = torch.device("cpu")


@pytest.fixture
def cpu_flags(monkeypatch):
    """Fake the CPU's instruction set: the capability check reads /proc/cpuinfo's flags."""
    def fake(flags: set[str]) -> None:
        monkeypatch.setattr(precision, "_cpu_flags", lambda: flags)
        precision.cpu_bf16_support.cache_clear()

    yield fake
    precision.cpu_bf16_support.cache_clear()


def test_a_cpu_without_native_bf16_stays_fp32_under_auto(cpu_flags):
    cpu_flags({"avx2", "avx512f", "fma"})
    assert precision.cpu_bf16_support()["native"] is False
    assert "lacks avx512_bf16 and amx_bf16" in precision.cpu_bf16_support()["reason"]
    assert precision.autocast_dtype(CPU, bf16_autocast=True, cpu_bf16="auto") is None
    assert precision.autocast_dtype(CPU, bf16_autocast=True, cpu_bf16="on") is torch.bfloat16  # asked for


def test_a_cpu_with_native_bf16_autocasts_under_auto_only_if_onednn_uses_it(cpu_flags, monkeypatch):
    cpu_flags({"avx512f", "avx512_bf16"})
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    precision.cpu_bf16_support.cache_clear()
    assert precision.autocast_dtype(CPU, bf16_autocast=True, cpu_bf16="auto") is torch.bfloat16
    assert precision.autocast_dtype(CPU, bf16_autocast=True, cpu_bf16="off") is None
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    precision.cpu_bf16_support.cache_clear()
    assert precision.autocast_dtype(CPU, bf16_autocast=True, cpu_bf16="auto") is None


def test_a_run_records_the_precision_it_resolved_to(tmp_path, cpu_flags):
    cpu_flags(set())  # a CPU without bf16: auto must mean float32, and the run must say so
    suite = write_suite(tmp_path / "fp32.json", scales=[8], epochs=1, baselines=[])
    (row,) = run_json("run", suite, "--store", tmp_path / "r.db", "--json")["runs"]
    assert row["cpu_bf16"] == "auto"
    assert row["precision"] == {"weights": "float32", "autocast": None, "cpu_bf16": "auto", "cpu_bf16_native": False,
                                "why": "the CPU lacks avx512_bf16 and amx_bf16: bf16 would be emulated"}


def _linear_weights(model) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


@pytest.mark.parametrize("model_name,input_len,target_len", [("config:tiny-bert", 16, 0), ("config:tiny-llama", 12, 4)])
def test_full_tuning_flops_are_6n_plus_12_layers_keys_width_per_token(model_name, input_len, target_len):
    """The textbook count (PaLM appendix B, nanoGPT): 2N per token forward for the N linear weights (the LM head
    included), 4 x layers x keys x attention width for the scores and their weighted sum; training is 3x."""
    config = model_config(model_name)
    base = load_model(model_name).model
    tokens = input_len + target_len
    width = config.num_attention_heads * (config.hidden_size // config.num_attention_heads)
    forward = 2 * _linear_weights(base) + 4 * config.num_hidden_layers * tokens * width
    counted = flops_per_token(model_name, "full", input_len, target_len)
    assert counted["infer"] == forward and counted["train"] == 3 * forward


def test_peft_saves_the_weight_gradients_of_frozen_weights():
    full = flops_per_token("config:tiny-t5", "full", 16, 4)
    lora = flops_per_token("config:tiny-t5", "lora", 16, 4)
    later = flops_per_token("config:tiny-t5", "lora[layers=later]", 16, 4)
    assert full["train"] / full["infer"] == pytest.approx(3.0)
    assert 1.9 < lora["train"] / lora["infer"] < 2.1  # forward + activation gradients + LoRA's own
    assert later["train"] < lora["train"]  # no backward at all below the first adapted layer


def test_a_tiny_run_reports_mfu_between_zero_and_one(grid_store):
    rows = run_json("results", "--store", grid_store, "--json")
    assert rows and all(0 < row["train_mfu"] < 1 for row in rows)
    assert all(row["flops"]["train"] > row["flops"]["infer"] > 0 for row in rows)


@pytest.mark.parametrize("name", ["lora", "ia3", "dora", "krona"])
@pytest.mark.parametrize("model_name", TINY_MODELS)
def test_merged_weights_match_unmerged_under_bf16_autocast(name, model_name):
    """bf16 keeps 8 bits of mantissa: merged and unmerged weights round differently, so logits agree to about
    1-2% of their scale (measured up to 2.1% on T5), while the method's own contribution is far larger."""
    loaded = load_model(model_name)
    method = METHODS.get(name)
    torch.manual_seed(0)
    model = method.apply(loaded.model, method.parse_options(MethodSpec.parse(name)), Context(family=loaded.family))
    with torch.no_grad():
        for parameter in (p for p in model.parameters() if p.requires_grad):
            parameter.add_(torch.randn_like(parameter) * 0.2)
    model.eval()
    inputs = {"input_ids": torch.randint(1000, 2000, (2, 10), generator=torch.Generator().manual_seed(0))}
    if loaded.family == "seq2seq":
        inputs["decoder_input_ids"] = inputs["input_ids"][:, :4]

    def output(m):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(**inputs)
        return (out.last_hidden_state if loaded.family == "encoder" else out.logits).float()

    unmerged, merged = output(model), output(merged_copy(model, method.merge))
    base = output(load_model(model_name).model)
    tolerance = 3e-2 * float(unmerged.abs().max())
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=tolerance)
    assert float((unmerged - base).abs().max()) > 3 * tolerance  # a merge that lost the method would fail


def test_the_cpu_peak_keeps_the_best_probe_so_a_probe_under_load_does_not_stick(tmp_path, monkeypatch):
    import peftbench.flops as flops

    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path))
    readings = iter([40e9, 100e9, 70e9])  # a loaded machine, then a quiet one, then loaded again
    monkeypatch.setattr(flops, "_probe_cpu", lambda dtype: next(readings))
    seen = []
    for _ in range(3):  # three processes: each probes once
        flops._cached_cpu_probe.cache_clear()
        seen.append(flops._cached_cpu_probe("cpu: test", "bfloat16"))
    flops._cached_cpu_probe.cache_clear()
    assert seen == [40e9, 100e9, 100e9]
