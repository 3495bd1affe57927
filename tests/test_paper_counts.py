"""The seed papers' parameter counts, printed by `peftbench params` from the built-in suites
(docs/parameter-counts.md says which notion each paper's number is and why some cells cannot match)."""

import json

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from conftest import run_cli
from peftbench.config import MethodSpec
from peftbench.suite_files import load_suite
from peftbench.methods import METHODS
from peftbench.methods.base import Context


def _params(model: str, *args: str) -> dict[str, dict]:
    code, out, err = run_cli("params", model, *args, "--json")
    assert code == 0, err
    return {row["spec"]: row for row in json.loads(out)}


LORA = "lora_scaling[r=2,s=1,targets=qkvo"
# Pu et al. Table 3 on FLAN-T5-XL: (spec, notion, printed). LoRA, prompt tuning and BitFit count trained
# parameters; (IA)3 counts what T-Few adds (both scaling vectors), of which the output ones train.
PU_TABLE_3 = [
    ("full", "total", 2_849_757_184),
    (f"{LORA}]", "trainable", 3_538_944),
    ("ia3[layout=tfew]", "added", 933_888),
    ("prompt_tuning[tokens=100]", "trainable", 204_800),
    ("bitfit[add_bias=true]", "trainable", 1_179_648),
]
PU_ABLATIONS = [
    (f"{LORA},layers=early]", "trainable", 1_769_472),
    (f"{LORA},layers=later]", "trainable", 1_769_472),
    (f"{LORA},layers=random]", "trainable", 1_769_472),
    (f"{LORA},drop=self_attn]", "trainable", 1_179_648),
    (f"{LORA},drop=cross_attn]", "trainable", 2_359_296),
    (f"{LORA},drop=attn_qo]", "trainable", 1_769_472),
    ("ia3[layout=tfew,layers=early]", "added", 466_944),
    ("ia3[layout=tfew,layers=later]", "added", 466_944),
    ("ia3[layout=tfew,layers=random]", "added", 466_944),
    ("ia3[layout=tfew,drop=self_attn+cross_attn]", "added", 344_064),
    ("ia3[layout=tfew,drop=ffn]", "added", 589_824),
]


@pytest.mark.parametrize("suite,expected", [("pu2023", PU_TABLE_3), ("pu2023-ablations", PU_ABLATIONS + [
    (f"{LORA}]", "trainable", 3_538_944), ("ia3[layout=tfew]", "added", 933_888)])])
def test_pu_et_al_table_3_exactly(suite, expected):
    rows = _params("config:flan-t5-xl", "--suite", suite)
    assert set(rows) == {spec for spec, _, _ in expected}
    for spec, notion, printed in expected:
        assert rows[spec][notion] == printed, spec
    assert rows["ia3[layout=tfew]"]["trainable"] == 540_672  # T-Few trains the output vectors only


# Lialin et al. Table 5, trainable parameters in millions (two decimals), for the rows whose definition can be
# recovered; None marks a cell that cannot be (docs/parameter-counts.md, notes C-I).
LIALIN_TABLE_5 = {
    "full": (737.67, 2851.60, 11307.32),
    "houlsby": (12.69, 12.69, 12.69),
    "pfeiffer": (6.34, 6.34, 6.34),
    "parallel_adapter[reduction=2,scale=4]": (50.41, 50.41, 50.41),
    "ia3": (0.34, 1.38, None),
    "ln_tuning": (0.12, 0.12, 0.12),
    "lora[r=8,alpha=8,targets=qv]": (2.36, None, 20.05),
    "lora[r=8,alpha=8,targets=all-linear]": (8.65, 25.17, 91.23),
    "compacter": (0.30, 0.30, 0.30),
    "compacter_pp": (0.15, 0.15, 0.15),
    "krona[b_rank=8,init=lokr]": (0.22, 0.41, 0.77),
    # Prefix rows: three sites (encoder self-, decoder self-, cross-attention), each its own prefix.
    "prefix_tuning[tokens=30,hidden=512]": (77.31, None, 1211.99),
    "prefix_tuning[tokens=30,hidden=0]": (4.42, 17.69, 70.78),  # the "Prompt tuning" row: the flat prefix
    "mam[tokens=30,hidden=800]": (171.07, None, None),  # 11B: MLP 512, below
    "unipelt[tokens=10,hidden=512]": (86.22, 316.70, None),
}


# The survey ran two rows differently on one size (docs/parameter-counts.md, "Per-size deviations"): the
# suites' method_overrides replace the spec there, so counting a suite on that size gives the printed cell.
LIALIN_PER_SIZE = {
    "config:t5-3b": ("lora[r=8,alpha=8,targets=qv]", "lora[r=8,alpha=8,targets=qv,drop=cross_attn]", 3.93),
    "config:t5-11b": ("mam[tokens=30,hidden=800]", "mam[tokens=30,hidden=512]", 1262.39),
}


@pytest.mark.parametrize("suite", ["lialin2024", "lialin2024-cnn"])
@pytest.mark.parametrize("size,model", list(enumerate(["config:t5-large", "config:t5-3b", "config:t5-11b"])))
def test_lialin_et_al_table_5_from_the_suites(suite, size, model):
    expected = {spec: printed[size] for spec, printed in LIALIN_TABLE_5.items()}
    if model in LIALIN_PER_SIZE:
        written, ran, printed = LIALIN_PER_SIZE[model]
        del expected[written]
        expected[ran] = printed
    rows = _params(model, "--suite", suite)
    assert set(expected) <= set(rows)
    for spec, printed in expected.items():
        if printed is not None:
            assert round(rows[spec]["trainable"] / 1e6, 2) == printed, spec


@pytest.mark.parametrize("suite", ["lialin2024", "lialin2024-cnn"])
def test_lialin_suites_run_the_configurations_counted(suite):
    """The suites' specs are the counted ones: LoRA with the survey's alpha 8 (not peftbench's 16), KronA as
    PEFT LoKr's defaults, the AdapterHub adapters with their defaults; the per-size specs on the hub
    checkpoints as on their configs."""
    from peftbench.suite_files import load_suite

    loaded = load_suite(suite)
    assert set(LIALIN_TABLE_5) <= set(loaded.methods)
    assert [spec for spec in loaded.methods if spec.startswith("lora")] == ["lora[r=8,alpha=8,targets=qv]",
                                                                             "lora[r=8,alpha=8,targets=all-linear]"]
    for config, (written, ran, _) in LIALIN_PER_SIZE.items():
        for model in (config, config.replace("config:", "google-t5/")):
            assert loaded.methods_for(model) == [ran if spec == written else spec for spec in loaded.methods]
    assert loaded.methods_for("config:t5-large") == loaded.methods


def test_lialin_suites_hold_the_prefix_rows_specs():
    """So `peftbench params MODEL --suite lialin2024` prints the cells checked above."""
    specs = {"prefix_tuning[tokens=30,hidden=512]", "prefix_tuning[tokens=30,hidden=0]", "mam[tokens=30,hidden=800]",
             "unipelt[tokens=10,hidden=512]"}
    for suite in ("lialin2024", "lialin2024-cnn"):
        assert specs <= set(load_suite(suite).methods), suite


@pytest.mark.parametrize("spec", ["prefix_tuning[tokens=4,hidden=16]", "mam[tokens=4,hidden=16]",
                                  "unipelt[tokens=4,hidden=16]"])
def test_prefix_methods_run_where_t5_keys_are_wider_than_d_model(spec):
    """T5-3B/11B have heads x d_kv > d_model: the prefix must be sized by the key width."""
    model = T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=32, d_kv=16, num_heads=4, d_ff=64,
                                                num_layers=2, decoder_start_token_id=0, pad_token_id=0,
                                                eos_token_id=1))
    method = METHODS.get(MethodSpec.parse(spec).name)
    adapted = method.apply(model, method.parse_options(MethodSpec.parse(spec)), Context(family="seq2seq"))
    ids = torch.randint(2, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    loss = adapted(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids[:, :3].clone()).loss
    loss.backward()
    assert torch.isfinite(loss)
