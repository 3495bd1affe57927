"""The methods generated from HF PEFT's config classes (methods/peft_tuners.py): options and defaults are
PEFT's own, counts agree with PEFT's and with a hand computation, the changed-after-merge count is what a merge
really rewrites, and a tuner that does not fit a model's layers fails at plan time with one line. The generic
method checks (liveness, frozen base, identity, merge, reload) run over them in test_method_zoo.py."""

import re
from pathlib import Path

import pytest
import torch

from conftest import TINY_MODELS, run_cli, write_suite
from peftbench.accounting import count
from peftbench.flops import flops_per_token
from peftbench.config import MethodSpec
from peftbench.errors import UserError
from peftbench.methods import METHODS
from peftbench.methods.peft_generated import OWNED_FIELDS, PeftTunerOptions
from peftbench.methods.peft_tuners import TUNERS
from peftbench.models import load_model
from scaffold import TEST_SPECS, build, train_steps

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_tuner_is_a_method_with_peft_defaults():
    """Each option is a field of the PEFT config class with that class's default; the fields peftbench sets
    (targets and module choice) are not options, and lora's targets are."""
    for tuner in TUNERS:
        method = METHODS.get(tuner.name)
        config = tuner.config_class()()
        own = set(method.options.model_fields) - set(PeftTunerOptions.model_fields)
        assert own and not own & OWNED_FIELDS, tuner.name
        defaults = method.options()
        assert {key: getattr(defaults, key) for key in own} == {key: getattr(config, key) for key in own}
        assert defaults.targets == "qv" and method.source == "HF PEFT" and f"HF PEFT {tuner.config}" in method.reference


def _lr_provenance() -> dict[str, list[str]]:
    """docs/methods.md's table "Where each tuner's learning rate comes from": method -> its cells."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text()
    table = text.split("### Where each tuner's learning rate comes from")[1].split("\n\n")[2]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    return {row[0].strip("`"): row[1:] for row in rows}


def test_docs_give_each_tuners_lr_experiment_and_our_defaults():
    """Each tuner's row names the PEFT experiment its lr comes from, that lr, and peftbench's defaults as the
    options really are (every `field value` pair of the last column: `unset` is None)."""
    rows = _lr_provenance()
    assert sorted(rows) == sorted(tuner.name for tuner in TUNERS)
    for tuner in TUNERS:
        experiment, lr, _, ours = rows[tuner.name]
        assert (f"`{tuner.lr_from}`" in experiment) if tuner.lr_from else experiment.startswith("none"), tuner.name
        assert float(lr.split()[0]) == tuner.peft_lr, tuner.name
        defaults = METHODS.get(tuner.name).options()
        pairs = re.findall(r"(\w+) (-?[\d.]+(?:e-?\d+)?|unset|[a-z]+_\d+)\b", ours)
        checked = [(key, value) for key, value in pairs if key in type(defaults).model_fields]
        assert checked or ours == "the same" or tuner.name == "beft", tuner.name
        for key, value in checked:
            expected = None if value == "unset" else type(getattr(defaults, key))(value) if value[0] in "-0123456789" else value
            assert getattr(defaults, key) == expected, (tuner.name, key)


def test_known_defaults_and_spec_strings():
    """A few of PEFT's defaults read back as PEFT documents them; spec strings are typed; unknown keys fail."""
    vera, loha, hira = (METHODS.get(name) for name in ("vera", "loha", "hira"))
    assert (vera.options().r, vera.options().d_initial, loha.options().alpha) == (256, 0.1, 8)
    options = hira.parse_options(MethodSpec.parse("hira[r=4,init_weights=gaussian,targets=all-linear]"))
    assert (options.r, options.init_weights, options.targets) == (4, "gaussian", "all-linear")
    assert METHODS.get("boft").parse_options(MethodSpec.parse("boft[init_weights=false]")).init_weights is False
    assert str(vera.canonical(MethodSpec.parse("vera[r=256,d_initial=0.5]"))) == "vera[d_initial=0.5]"
    with pytest.raises(UserError, match="method 'vera' has no option 'target_modules'"):
        vera.parse_options(MethodSpec.parse("vera[target_modules=q]"))
    with pytest.raises(UserError, match="bad value for 'r'"):
        vera.parse_options(MethodSpec.parse("vera[r=many]"))


# Hand counts on the tiny models (d=32; T5 adapts q and v of 6 attentions: 12 layers of 32 x 32; Llama's value
# projection is 16 x 32 under grouped-query attention, 2 layers).
# (trainable, added frozen, changed after merge)
HAND_COUNTS = {
    # VeRA: per layer a lambda_d of r=256 and a lambda_b of out_features; the random A (r x in) and B (out x r) are
    # frozen buffers that every layer shares, added once and kept in the checkpoint, as PEFT's save_projection does.
    ("vera", "config:tiny-t5"): (12 * (256 + 32), 256 * 32 + 32 * 256, 12 * 32 * 32),
    # LoHa r=8: two pairs (out x r, r x in) per layer: q 2 * 8 * (32 + 32), v 2 * 8 * (16 + 32).
    ("loha", "config:tiny-llama"): (2 * (2 * 8 * 64 + 2 * 8 * 48), 0, 2 * (32 * 32 + 16 * 32)),
    # SHiRA r=4: r * (in + out) entries per layer, and a merge rewrites exactly those.
    ("shira[r=4]", "config:tiny-llama"): (2 * (4 * 64 + 4 * 48), 0, 2 * (4 * 64 + 4 * 48)),
}


@pytest.mark.parametrize("spec,model_name", list(HAND_COUNTS))
def test_counts_match_peft_and_hand(spec, model_name):
    trainable, frozen, changed = HAND_COUNTS[spec, model_name]
    counted = count(model_name, spec)
    assert (counted.trainable, counted.added, counted.changed) == (trainable, trainable + frozen, changed)
    assert counted.adapter_bytes == 4 * (trainable + frozen)
    peft_model = build(spec, model_name).model
    assert peft_model.get_nb_trainable_parameters()[0] == trainable


@pytest.mark.parametrize("model_name", TINY_MODELS)
def test_added_counts_what_peft_saves(model_name):
    """`added` (and the checkpoint) is every tensor the method adds, frozen buffers included, once each: what PEFT's
    own adapter state dict holds (get_peft_model_state_dict), but for two that PEFT stores differently."""
    from peft import get_peft_model_state_dict

    for tuner in TUNERS:
        spec = TEST_SPECS.get(tuner.name, tuner.name)
        counted = count(model_name, spec)
        saved = sum(tensor.numel() for tensor in get_peft_model_state_dict(build(spec, model_name).model).values())
        if tuner.name == "randlora":  # PEFT repeats the two shared bases under every adapted layer and the model
            bases = counted.added - counted.trainable
            layers = 12 if model_name == "config:tiny-t5" else 4
            assert bases > 0 and saved == counted.trainable + (layers + 1) * bases
        elif tuner.name == "shira":  # PEFT also saves each value's row and column; peftbench redraws them by seed
            assert counted.added == counted.trainable and saved == 3 * counted.trainable
        else:
            assert counted.added == saved, tuner.name


def _mergeable_specs():
    for tuner in TUNERS:
        if not tuner.not_mergeable:
            yield TEST_SPECS.get(tuner.name, tuner.name)


@pytest.mark.parametrize("spec", list(_mergeable_specs()))
def test_changed_after_merge_is_what_the_merge_rewrites(spec, model_name="config:tiny-bert"):
    """Trained, then merged: the base entries that differ from the untrained model's are the count
    accounting gives from the meta model (BERT: its biases would show a merge that also rewrites those). In
    float64, where no update is small enough to round away. A tuner that declares its count a bound stays
    within it."""
    built = build(spec, model_name, dtype=torch.float64)
    train_steps(built.family, built.model)
    name = MethodSpec.parse(spec).name
    merged = METHODS.get(name).merge(built.model)
    base = dict(load_model(model_name).model.double().named_parameters())
    with torch.no_grad():
        differ = sum(int((p != base[key]).sum()) for key, p in merged.named_parameters())
    changed = count(model_name, spec).changed
    bound = next(tuner.changed_is_bound for tuner in TUNERS if tuner.name == name)
    assert 0 < differ <= changed if bound else differ == changed


def test_a_tuner_that_does_not_fit_fails_at_plan_time_with_one_line(tmp_path):
    """C3A's default block of 256 does not divide the tiny models' width of 32: the dry run names the option."""
    suite = write_suite(tmp_path / "c3a.json", models=["config:tiny-t5"], methods=["c3a"])
    code, out, err = run_cli("run", suite, "--dry-run", "--store", tmp_path / "results.db")
    assert code == 2 and "Traceback" not in err
    assert err.strip().count("\n") == 0
    assert "method 'c3a' does not fit" in err and "block size" in err
    assert not (tmp_path / "results.db").exists()
    code, _, err = run_cli("params", "config:tiny-t5", "--method", "c3a[block_size=16]")
    assert code == 0, err


def test_declarations_name_their_reasons():
    """Whatever does not hold is said in the declaration; identity and merge hold for the others (tested in
    test_method_zoo.py)."""
    for tuner in TUNERS:
        method = METHODS.get(tuner.name)
        assert method.identity_init == (not tuner.not_identity)
        assert method.mergeable == (not tuner.not_mergeable)
        assert tuner.reference and tuner.summary and tuner.peft_lr > 0
    assert {t.name for t in TUNERS if t.not_identity} == {"fourierft", "c3a", "vblora", "unilora"}


def test_a_tuner_starts_at_three_times_peft_lr_or_a_tenth_of_that_where_a_real_run_said_so():
    for tuner in TUNERS:
        scaled = 3 * tuner.peft_lr / (10 if tuner.scaled_lr_too_high else 1)
        assert METHODS.get(tuner.name).default_lr == pytest.approx(scaled, rel=1e-6)
    assert {t.name for t in TUNERS if t.scaled_lr_too_high} == {"c3a", "delora", "hira", "lokr"}
    assert METHODS.get("c3a").default_lr == pytest.approx(0.09)  # PEFT's 0.3: peaks at 0.9, not 9


@pytest.mark.parametrize("model_name", TINY_MODELS)
def test_flops_are_counted_on_the_meta_model_or_the_method_says_why(model_name):
    """A run counts FLOPs by a forward and backward pass on the meta model: a tuner whose forward reads values
    (LoHa's .item(), SHiRA's sparse tensor) declares it, and its FLOPs are not counted rather than failing the run."""
    for tuner in TUNERS:
        flops = flops_per_token(model_name, TEST_SPECS.get(tuner.name, tuner.name), 16, 4)
        if tuner.no_meta_forward:
            assert flops["infer"] is None and tuner.no_meta_forward in flops["counted_by"], tuner.name
        else:
            assert flops["infer"] > 0 and flops["train"] > flops["infer"], tuner.name


def test_memory_plan_says_why_a_method_cannot_be_traced():
    code, _, err = run_cli("memory", "config:tiny-bert", "--method", "loha")
    assert code == 2 and err.strip().count("\n") == 0 and ".item()" in err and "a run trains as usual" in err
    code, out, err = run_cli("memory", "config:tiny-bert", "--method", "boft")  # built on the CPU, then meta
    assert code == 0, err
