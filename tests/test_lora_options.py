"""LoRA's initialisations (PiSSA, OLoRA, Gaussian), rsLoRA's scaling and LoRA+'s learning rate for B, as options of
`lora` (and `dora`): each does what its reference defines, on the tiny architectures, and adding the options
left the ids of every run stored before them as they were."""

import pytest
import torch

from conftest import TINY_MODELS, assert_same_function, run_cli, write_suite
from peftbench.config import MethodSpec
from peftbench.data import make_splits
from peftbench.execution import build_task_model
from peftbench.methods import METHODS
from peftbench.methods.peft_methods import LoraOptions
from peftbench.models import load_model
from peftbench.runspec import RunSpec, single_run
from peftbench.tasks import get_task
from peftbench.train import parameter_groups, train
from scaffold import assert_checkpoint_reloads, build, output, task_loss, train_steps

LORA = METHODS.get("lora")
INITS = ["lora[init=pissa]", "lora[init=olora]", "lora[init=gaussian]"]
# PEFT factorises W in float32 (lora/layer.py pissa_init, olora_init; it refuses float64 weights), so the
# adapted model equals the base model only up to float32 rounding of W - B A + B A: a tolerance of 1e-5 of the
# outputs' magnitude (float32 epsilon 1.2e-7, summed over widths of 32-64 and two layers).
FLOAT32_FACTORS_RTOL = 1e-5


def _case(spec: str, model: str):
    return pytest.param(spec, model, id=f"{spec}-{model.removeprefix('config:')}")


def _layer(model, name_part: str = "query"):
    """The first LoRA layer whose name holds `name_part` (BERT's query), with its base weight before LoRA."""
    return next(module for name, module in model.named_modules() if hasattr(module, "lora_A") and name_part in name)


def test_the_new_options_are_stored_only_when_set_so_earlier_run_ids_stay():
    assert set(LoraOptions().stored()) == {"r", "alpha", "dropout", "targets", "layers", "modules", "drop"}
    assert LoraOptions(init="pissa", b_lr_ratio=16).stored() == {**LoraOptions().stored(), "init": "pissa",
                                                                  "b_lr_ratio": 16.0}
    assert str(LORA.canonical(MethodSpec.parse("lora[init=default,rslora=false,b_lr_ratio=1]"))) == "lora"
    spec = single_run("config:tiny-bert", "lora[rslora=true,init=olora]", n_train=8, batch_size=4,
                      max_input_length=16, max_target_length=4)
    assert RunSpec.load(spec.dump()) == spec  # tests/test_run_ids.py pins the ids of lora runs without them


@pytest.mark.parametrize("spec,model_name", [_case(spec, model) for spec in INITS for model in TINY_MODELS])
def test_each_init_starts_as_the_base_model(spec, model_name):
    base = load_model(model_name).model.eval()
    built = build(spec, model_name)
    with torch.no_grad():
        adapted, reference = output(built.family, built.model.eval()), output(built.family, base)
    if spec == "lora[init=gaussian]":  # B = 0: exactly the base
        assert torch.equal(adapted, reference)
    else:
        torch.testing.assert_close(adapted, reference, rtol=0, atol=FLOAT32_FACTORS_RTOL * reference.abs().max().item())
        assert not torch.equal(adapted, reference)  # the base weights were rewritten, not left alone


def test_pissa_factors_are_the_top_singular_triplets_and_the_base_keeps_the_rest():
    """Meng et al. 2024 (PiSSA), PEFT lora/layer.py pissa_init: B A scaled is W's best rank-r approximation
    U_r S_r V_r^T, and the frozen weight becomes W - U_r S_r V_r^T."""
    original = load_model("config:tiny-bert").model
    weight = next(m for n, m in original.named_modules() if n.endswith("query")).weight.detach().clone()
    layer = _layer(build("lora[init=pissa,r=4]", "config:tiny-bert").model)
    low_rank = layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    torch.testing.assert_close(low_rank, u[:, :4] @ torch.diag(s[:4]) @ vh[:4], rtol=0, atol=1e-5)
    torch.testing.assert_close(layer.base_layer.weight, weight - low_rank, rtol=0, atol=1e-6)
    # A and B share the singular values' square roots: their rows / columns have equal norms, sqrt(s / scaling).
    torch.testing.assert_close(layer.lora_A["default"].weight.norm(dim=1), layer.lora_B["default"].weight.norm(dim=0))


def test_olora_factors_are_w_s_qr_factors():
    """Büyükakyüz 2024 (OLoRA), PEFT lora/layer.py olora_init: B = Q[:, :r] with orthonormal columns, A = R[:r]
    (upper triangular), and the frozen weight becomes W - scaling B A."""
    original = load_model("config:tiny-bert").model
    weight = next(m for n, m in original.named_modules() if n.endswith("query")).weight.detach().clone()
    layer = _layer(build("lora[init=olora,r=4]", "config:tiny-bert").model)
    b, a = layer.lora_B["default"].weight, layer.lora_A["default"].weight
    torch.testing.assert_close(b.T @ b, torch.eye(4), rtol=0, atol=1e-5)
    assert torch.equal(a, torch.triu(a))
    torch.testing.assert_close(layer.base_layer.weight, weight - layer.scaling["default"] * b @ a, rtol=0, atol=1e-6)


def test_gaussian_init_draws_a_from_a_normal_of_std_one_over_r_and_zeroes_b():
    layers = [m for m in build("lora[init=gaussian,r=4]", "config:tiny-t5").model.modules() if hasattr(m, "lora_A")]
    a = torch.cat([layer.lora_A["default"].weight.flatten() for layer in layers])  # 12 layers x 4 x 32 = 1,536
    assert all(not layer.lora_B["default"].weight.any() for layer in layers)
    assert abs(a.std().item() - 1 / 4) < 0.1 / 4 and abs(a.mean().item()) < 0.1 / 4


@pytest.mark.parametrize("spec,model_name", [_case(spec, model) for spec in INITS[:2] for model in TINY_MODELS])
def test_rewritten_bases_merge_and_reload(spec, model_name):
    """PiSSA and OLoRA change the frozen weights at init; the merge folds B A back into them, and a saved run
    (only its trained tensors) reloads because rebuilding it factorises the same W again."""
    built = build(spec, model_name)
    train_steps(built.family, built.model, task_loss)
    built.model.double()
    with torch.no_grad():
        unmerged = output(built.family, built.model)
        merged = output(built.family, LORA.merge(built.model))
    assert_same_function(merged, unmerged)
    assert_checkpoint_reloads(spec, model_name)


def test_rslora_scales_the_update_by_alpha_over_the_square_root_of_r():
    """Kalajdzievski 2023: scaling alpha / sqrt(r) instead of alpha / r, so the same B A adds sqrt(r) times as
    much to a layer's output (r = 4: twice)."""
    plain, stable = (_layer(build(f"lora[r=4,alpha=8{extra}]", "config:tiny-bert", dtype=torch.float64).model)
                     for extra in ("", ",rslora=true"))
    assert (plain.scaling["default"], stable.scaling["default"]) == (2.0, 4.0)
    inputs = torch.randn(2, 5, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    deltas = []
    with torch.no_grad():
        for layer in (plain, stable):
            layer.lora_B["default"].weight.fill_(0.01)
            deltas.append(layer(inputs) - layer.base_layer(inputs))
    assert deltas[0].abs().max() > 0
    assert_same_function(deltas[1], 2 * deltas[0])


def _one_step(spec_text: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each trained tensor before and after one optimizer step of peftbench's loop (4 examples, batch 4)."""
    task = get_task("bbc_topic")
    spec = single_run("config:tiny-bert", spec_text, n_train=4, batch_size=4, max_input_length=16,
                      max_target_length=4, lr=1e-3)
    task_model = build_task_model(spec, task)
    splits = make_splits(task, task.load(), split_seed=0, val_cap=4, test_cap=4)
    before = {n: p.detach().clone() for n, p in task_model.model.named_parameters() if p.requires_grad}
    encode = task_model.encoder.encode
    train(task_model, [encode(r) for r in splits.train[:4]], [encode(r) for r in splits.val], spec.train, spec.seed)
    return {n: (before[n], p.detach()) for n, p in task_model.model.named_parameters() if p.requires_grad}


def test_loraplus_trains_b_and_one_dimensional_tensors_at_the_ratio():
    """Hayou et al. 2024 (LoRA+), grouped as PEFT's optimizers/loraplus.py: lora_B and every 1-d trained tensor
    (the head's bias here) at b_lr_ratio x the learning rate, lora_A and the head's weight at 1x. On AdamW's
    first step a tensor moves by lr x g / (|g| + eps) element-wise, so B's step is exactly 16 times LoRA's
    (A, facing B = 0, gets no gradient yet and stays)."""
    plain, plus = _one_step("lora"), _one_step("lora[b_lr_ratio=16]")
    assert plain.keys() == plus.keys()
    for name, (start, end) in plus.items():
        assert torch.equal(start, plain[name][0])  # the same seed builds the same model
        step, plain_step = end - start, plain[name][1] - plain[name][0]
        if "lora_A" in name:
            assert not step.any() and not plain_step.any()
        elif "lora_B" in name or start.ndim == 1:
            assert plain_step.abs().max() > 0
            torch.testing.assert_close(step, 16 * plain_step, rtol=1e-4, atol=0)
        else:
            torch.testing.assert_close(step, plain_step, rtol=1e-4, atol=0)


def test_parameter_groups_are_one_unless_a_method_asks_for_more():
    a, b, bias = (torch.nn.Parameter(torch.zeros(shape)) for shape in ((2, 4), (4, 2), (2,)))
    trainable = {"q.lora_A.default.weight": a, "q.lora_B.default.weight": b, "head.bias": bias}
    assert [len(g["params"]) for g in parameter_groups(trainable, 1e-3, None)] == [3]
    factor = LORA.learning_rate_factors(LoraOptions(b_lr_ratio=4))
    groups = parameter_groups(trainable, 1e-3, factor)
    assert [(g["lr"], len(g["params"])) for g in groups] == [(1e-3, 1), (4e-3, 2)]
    assert LORA.learning_rate_factors(LoraOptions()) is None


@pytest.mark.parametrize("spec,message", [
    ("lora[init=svd]", "bad value for 'init'"),
    ("lora[b_lr_ratio=0.5]", "bad value for 'b_lr_ratio'"),
    ("lora[rslora=maybe]", "bad value for 'rslora'"),
])
def test_bad_values_are_one_line_errors(tmp_path, spec, message):
    suite = write_suite(tmp_path / "bad.json", methods=[spec])
    code, out, err = run_cli("run", suite, "--store", tmp_path / "r.db", "--dry-run")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r.db").exists()


@pytest.mark.parametrize("spec", INITS[:2])
def test_an_exported_adapter_loads_with_peft_onto_the_original_base(tmp_path, spec):
    """`peftbench export` writes a PEFT method's adapter with save_pretrained; for PiSSA and OLoRA its config keeps
    the init, so PeftModel.from_pretrained factorises the original W again before loading the trained factors,
    and the adapter applies to the original base model as it is on the hub."""
    from peft import PeftModel

    built = build(spec, "config:tiny-llama")
    train_steps(built.family, built.model, task_loss)
    built.model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(load_model("config:tiny-llama").model, tmp_path).eval()
    with torch.no_grad():
        expected = output(built.family, built.model)
        torch.testing.assert_close(output(built.family, loaded), expected, rtol=0, atol=1e-6)
        assert (expected - output(built.family, load_model("config:tiny-llama").model.eval())).abs().max() > 1e-3
