import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from peftbench.gguf_cache import cached_model_dir, smollm2_gguf_path


def greedy_ids_and_logits(model, tokenizer, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
        ids = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    return ids, logits


def test_cached_model_matches_gguf_and_is_reused(tmp_path):
    gguf_path = smollm2_gguf_path()
    model_dir = cached_model_dir(gguf_path, tmp_path)
    written_at = (model_dir / "model.safetensors").stat().st_mtime_ns

    started = time.perf_counter()
    assert cached_model_dir(gguf_path, tmp_path) == model_dir
    assert time.perf_counter() - started < 1.0
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == written_at

    prompt = "The capital of France is"
    reference = greedy_ids_and_logits(
        AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name),
        AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name),
        prompt,
    )
    cached = greedy_ids_and_logits(
        AutoModelForCausalLM.from_pretrained(model_dir),
        AutoTokenizer.from_pretrained(model_dir),
        prompt,
    )
    assert torch.equal(cached[0], reference[0])
    torch.testing.assert_close(cached[1], reference[1], atol=1e-4, rtol=0)
