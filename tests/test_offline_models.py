"""The packaged offline models run end to end: SmolLM2 (GGUF, decoder-only) and MiniLM (BERT encoder)."""

import pytest

from conftest import run_json, write_suite


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    """A private model cache, so the test dequantises SmolLM2 itself and leaves ~/.cache alone."""
    patcher = pytest.MonkeyPatch()
    patcher.setenv("PEFTBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    patcher.undo()


def test_smollm2_text_to_text_run(tmp_path, model_cache):
    suite = write_suite(tmp_path / "smol.json", models=["offline:smollm2-135m"], tasks=["finefood_sentiment"],
                        methods=["lora"], scales=[8], epochs=1, batch_size=4, max_input_length=48, val_cap=4,
                        test_cap=8)
    result = run_json("run", suite, "--store", tmp_path / "r.db", "--json")
    runs = {r["method"]: r for r in result["runs"]}
    assert set(runs) == {"majority", "zero_shot", "lora"} and result["counts"].get("failed", 0) == 0
    lora = runs["lora"]
    assert lora["trainable_params"] == 30 * 8 * (576 + 576 + 576 + 192)  # q 576->576, v 576->192, 30 layers
    assert lora["total_params"] == 134_515_008 + lora["trainable_params"]
    counts = lora["metrics"]["prediction_counts"]
    assert sum(counts.values()) == 8 and set(counts) == {"great", "other", "<other>"}
    # The real model on real news (peftbench.forgetting): 3.653 nats per token on 5,002 tokens, in float32 and under
    # bf16 autocast alike (random weights would give ~ln(49152) = 10.8); the margin covers other CPUs' kernels.
    assert lora["general_loss_before"] == pytest.approx(3.653, abs=0.05) and lora["general_text"]["tokens"] == 5002
    assert lora["forgetting"] == pytest.approx(lora["general_loss_after"] - lora["general_loss_before"])
    assert abs(lora["forgetting"]) < 0.1  # two steps of LoRA barely move the model
    assert runs["majority"].get("forgetting") is None and runs["zero_shot"].get("forgetting") is None


def test_minilm_classifier_run(tmp_path):
    suite = write_suite(tmp_path / "mini.json", models=["offline:minilm-l6"], methods=["ia3"], scales=[16])
    result = run_json("run", suite, "--store", tmp_path / "r.db", "--json")
    ia3 = next(r for r in result["runs"] if r["method"] == "ia3")
    assert ia3["status"] == "finished"
    # (IA)3 vectors on key, value (384 each) and the FFN output's input (1536) in 6 layers, plus the 384x5 head;
    # PEFT's own BERT default would also scale attention.output.dense, which is not in Liu et al.
    assert ia3["trainable_params"] == 6 * (384 + 384 + 1536) + 384 * 5 + 5
