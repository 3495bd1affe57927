"""The memory plan (peftbench.memory): its parts are exact byte counts of the adapted model's parameters, its
activation term equals what autograd really saves when the same model trains on real tensors, checkpointing
plans less, and `peftbench memory` answers the issue's acceptance questions and refuses bad input."""

import pytest
import torch
from conftest import run_cli, run_json, write_suite

from peftbench.accounting import count
from peftbench.heads import MeanPoolClassifier
from peftbench.memory import GB, MemorySettings, fit_options, plan_memory
from peftbench.memory_trace import saved_tensor_bytes
from peftbench.methods import METHODS
from peftbench.config import MethodSpec
from peftbench.methods.base import Context
from peftbench.models import load_model
from peftbench.profile import default_dtype

ARCHITECTURES = ["config:tiny-t5", "config:tiny-llama", "config:tiny-bert", "config:tiny-opt"]
METHOD_SPECS = ["full", "lora", "prompt_tuning[tokens=4]", "houlsby"]


@pytest.mark.parametrize("model", ARCHITECTURES)
@pytest.mark.parametrize("method", ["full", "lora"])
def test_parameter_parts_are_exact_byte_counts(model, method):
    plan = plan_memory(MemorySettings(model=model, method=method, batch_size=2, seq_len=16, target_len=4))
    counted = count(model, method)
    head = 0 if plan.family != "encoder" else 32 * 2 + 2  # the mean-pooling head: hidden 32 -> 2 labels
    assert plan.weights == 4 * counted.total
    assert plan.method_tensors == 4 * (counted.added + head)
    assert plan.trainable_params == counted.trainable + head
    assert plan.gradients == 4 * plan.trainable_params and plan.optimizer == 8 * plan.trainable_params
    # One micro-batch per step: gradients appear as activations are freed, so the larger of the two counts
    # (the gradients with the working set of the last backward step through a layer).
    assert plan.total == plan.weights + plan.method_tensors + plan.optimizer \
        + max(plan.gradients + plan.working, plan.activations)
    accumulating = plan_memory(MemorySettings(model=model, method=method, batch_size=2, seq_len=16, target_len=4,
                                              grad_accum=2))
    assert accumulating.total == plan.fixed + plan.activations
    half = plan_memory(MemorySettings(model=model, method=method, batch_size=2, seq_len=16, target_len=4,
                                      weights_dtype="bfloat16"))
    assert half.weights * 2 == plan.weights and half.optimizer * 2 == plan.optimizer


def _real_saved_bytes(model_name: str, method: str, settings: MemorySettings) -> tuple:
    loaded = load_model(model_name)
    model = METHODS.get(MethodSpec.parse(method).name).apply(
        loaded.model, METHODS.get(MethodSpec.parse(method).name).parse_options(MethodSpec.parse(method)),
        Context(family=loaded.family, seed=0))
    top = MeanPoolClassifier(model, model.config.hidden_size, 2) if loaded.family == "encoder" else model
    return saved_tensor_bytes(top, model, loaded.family, settings)


@pytest.mark.parametrize("model", ARCHITECTURES)
@pytest.mark.parametrize("method", METHOD_SPECS)
def test_traced_activations_equal_what_autograd_saves_on_real_tensors(model, method):
    settings = MemorySettings(model=model, method=method, batch_size=3, seq_len=12, target_len=5)
    plan = plan_memory(settings)
    outside, per_layer, inputs, tail, largest = _real_saved_bytes(model, method, settings)
    # Equal but for the storages of a few index tensors (a fake arange is materialised where a real one is
    # expanded: 64 bytes under prompt tuning). Both add the largest layer's saved bytes once more, or twice the
    # loss's largest tensor: the gradients in flight while the backward pass is inside them.
    working = max([*per_layer, 2 * largest])
    assert 0 < largest <= tail <= outside
    assert plan.activations_full == pytest.approx(outside + sum(per_layer) + working, rel=1e-3, abs=128)
    assert plan.activations_checkpointed == pytest.approx(outside + sum(inputs) + max(per_layer) + working,
                                                          rel=1e-3, abs=128)
    assert outside > 0
    assert plan.layers == len(per_layer) == (4 if model == "config:tiny-t5" else 2)


def test_traced_activations_equal_the_real_ones_under_bf16_autocast():
    settings = MemorySettings(model="config:tiny-t5", method="lora", batch_size=2, seq_len=8, target_len=3,
                              autocast=True)
    plan = plan_memory(settings)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outside, per_layer, _, _, largest = _real_saved_bytes("config:tiny-t5", "lora", settings)
    assert plan.activations_full == outside + sum(per_layer) + max([*per_layer, 2 * largest])
    # Autocast keeps bf16 copies of the frozen weights for the backward pass: more than fp32 compute saves.
    assert plan.activations_full > plan_memory(MemorySettings(**{**settings.__dict__, "autocast": False})).activations_full


def test_activations_grow_with_batch_and_length_and_checkpointing_saves_most_of_them():
    small = plan_memory(MemorySettings(model="config:t5-large", method="lora", batch_size=1, seq_len=128))
    double = plan_memory(MemorySettings(model="config:t5-large", method="lora", batch_size=2, seq_len=128))
    longer = plan_memory(MemorySettings(model="config:t5-large", method="lora", batch_size=1, seq_len=256))
    assert 1.95 < double.activations / small.activations <= 2.0  # T5's position bias is shared by the batch
    assert longer.activations > 2 * small.activations  # attention grows with the square of the length
    assert small.layers == 48 and small.activations_checkpointed < small.activations_full / 4
    checkpointed = plan_memory(MemorySettings(model="config:t5-large", method="lora", batch_size=1, seq_len=128,
                                              gradient_checkpointing=True))
    assert checkpointed.activations == small.activations_checkpointed
    assert checkpointed.total < small.total


def test_fit_options_name_what_would_fit():
    plan = plan_memory(MemorySettings(model="config:t5-large", method="full", batch_size=8, seq_len=512))
    fixed = plan.fixed
    between = fixed + (plan.activations_checkpointed + plan.activations) / 2
    options = fit_options(plan, between)
    assert any(o.startswith("gradient checkpointing") for o in options)
    micro = max(m for m in (1, 2, 4) if m <= plan.largest_micro_batch(between))  # divisors of the batch of 8
    assert fixed + plan.activations_at(micro) <= between
    # A smaller micro-batch is planned between traces at 1 and at 8: exact at both ends.
    one = plan_memory(MemorySettings(model="config:t5-large", method="full", batch_size=1, seq_len=512))
    assert plan.activations_at(1) == one.activations and plan.activations_at(8) == plan.activations
    assert plan.activations_at(1, checkpointed=True) == one.activations_checkpointed
    assert f"micro-batch {micro} with gradient accumulation {8 // micro} " in " ".join(options)
    assert plan.shards_needed(fixed / 2 + plan.activations + 1) == 2
    # However many GPUs, each holds FSDP's gathered units and at least one sequence's activations.
    assert plan.shards_needed(plan.gathered + plan.activations_of(1)) is None


def test_acceptance_t5_11b_full_needs_sharding_and_lora_fits_80_gb():
    full = run_json("memory", "config:t5-11b", "--method", "full", "--batch-size", "1", "--seq-len", "512",
                    "--target-len", "8", "--json")[0]
    assert full["bytes"]["total"] >= 181e9
    assert full["bytes"]["weights"] + full["bytes"]["gradients"] + full["bytes"]["optimizer_states"] \
        == 16 * full["total_params"]
    assert not full["fits"]["80"] and full["shards_needed"]["80"] >= 3
    assert any("sharding" in option for option in full["options"]["80"])
    code, text, _ = run_cli("memory", "config:t5-11b", "--method", "full", "--batch-size", "1", "--seq-len", "512",
                            "--target-len", "8", "--gpu-memory-gb", "80")
    assert code == 0 and "needs sharding" in text and "80 GB GPU: does not fit" in text
    lora = run_json("memory", "config:t5-11b", "--method", "lora", "--batch-size", "1", "--seq-len", "512",
                    "--target-len", "8", "--json")[0]
    assert lora["fits"]["80"] and lora["bytes"]["total"] < 80e9


@pytest.mark.parametrize("args, message", [
    (["config:tiny-t5", "--batch-size", "0"], "--batch-size 0 is too small"),
    (["config:tiny-t5", "--seq-len", "0"], "--seq-len 0 is too small"),
    (["config:nope"], "unknown model 'config:nope'"),
    (["config:tiny-t5", "--method", "nosuch"], "nosuch"),
    (["config:tiny-t5", "--gpu-memory-gb", "-1"], "--gpu-memory-gb must be a positive number"),
    (["config:tiny-t5", "--dtype", "fp8"], "fp8"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    code, out, err = run_cli("memory", *args)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_table_fits_80_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, text, _ = run_cli("memory", "config:tiny-t5", "--method", "full", "--method", "lora", "--batch-size", "2",
                            "--seq-len", "16")
    assert code == 0 and "AdamW states" in text and "activations" in text and "24 GB GPU: fits" in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert GB == 1e9


def test_dry_run_shows_each_training_runs_plan_and_whether_it_fits(tmp_path):
    suite = write_suite(tmp_path / "plan.json", methods=["full", "lora"])
    planned = run_json("run", suite, "--store", tmp_path / "r.db", "--dry-run", "--json")
    trains = [run for run in planned["runs"] if run["kind"] == "train"]
    assert planned["memory_target"]["kind"] == "cpu" and len(trains) == 2
    direct = plan_memory(MemorySettings(model="config:tiny-bert", method="full", batch_size=8, seq_len=48,
                                        autocast=default_dtype("cpu") == "bf16"))  # cpu_bf16: auto
    full = next(run for run in trains if run["method"] == "full")
    assert full["memory"]["peak_bytes"] == direct.total and full["memory"]["fits"]
    assert all(run["memory"] is None for run in planned["runs"] if run["kind"] == "baseline")
    elsewhere = run_json("run", suite, "--store", tmp_path / "r.db", "--dry-run", "--json", "--gpu-memory-gb", "0.0005")
    assert elsewhere["memory_target"] == {"kind": "cuda", "capacity_bytes": 0.0005e9,
                                          "label": "a GPU of 0.0005 GB (--gpu-memory-gb)", "planned": True}
    assert [run["memory"]["fits"] for run in elsewhere["runs"] if run["kind"] == "train"] == [False, False]
    code, text, _ = run_cli("run", suite, "--store", tmp_path / "r.db", "--dry-run", "--gpu-memory-gb", "0.0005")
    assert code == 0 and "DOES NOT FIT" in text and "2 run(s) DO NOT FIT" in text
    assert not (tmp_path / "r.db").exists()


def test_a_run_that_cannot_fit_is_refused_before_anything_loads(tmp_path):
    suite = write_suite(tmp_path / "big.json", methods=["full"], batch_size=16, max_input_length=256)
    plan = plan_memory(MemorySettings(model="config:tiny-bert", method="full", batch_size=16, seq_len=256,
                                      autocast=True))
    assert plan.activations_checkpointed < plan.activations
    room = (plan.fixed + plan.activations_checkpointed + plan.total) / 2 / GB  # fits only with fewer activations
    code, out, err = run_cli("run", suite, "--store", tmp_path / "r.db", "--gpu-memory-gb", f"{room:.6f}")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "config:tiny-bert · full at micro-batch 16 needs about" in err
    assert "gradient_checkpointing: true (" in err and "with grad_accum" in err
    assert not (tmp_path / "r.db").exists() and not list(tmp_path.glob("*.md"))
    code, _, err = run_cli("run", suite, "--store", tmp_path / "r.db", "--gpu-memory-gb", "-3")
    assert code == 2 and "--gpu-memory-gb must be a positive number" in err



def test_a_forward_pass_that_fails_is_one_line_in_memory_and_not_planned_in_a_dry_run(tmp_path, monkeypatch):
    import peftbench.memory_trace as memory_trace

    def fails(*args, **kwargs):
        raise RuntimeError("Sizes of tensors must match except in dimension 1\nmore detail")

    monkeypatch.setattr(memory_trace, "saved_tensor_bytes", fails)
    code, out, err = run_cli("memory", "config:tiny-opt", "--method", "lora", "--seq-len", "8")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "cannot plan the memory of config:tiny-opt · lora" in err and "Sizes of tensors must match" in err
    suite = write_suite(tmp_path / "broken.json", models=["config:tiny-opt"], methods=["ln_tuning"], max_input_length=40)
    planned_grid = run_json("run", suite, "--store", tmp_path / "r.db", "--dry-run", "--json", "--gpu-memory-gb", "1")
    trains = [run for run in planned_grid["runs"] if run["kind"] == "train"]
    assert trains and all(run["memory"]["fits"] is None and "cannot plan" in run["memory"]["not_planned"]
                          for run in trains)


def test_a_dry_run_traces_each_shape_once_and_plans_as_each_run_alone(tmp_path, monkeypatch):
    """grid_memory traces once per distinct model x method x shape, and only at the run's own micro-batch, yet
    every run's peak and parts equal its own full plan (plan_memory with the micro-batch trace)."""
    import peftbench.memory as memory
    from peftbench.memory_grids import Target, _plan_or_reason, _training_specs, grid_memory, planned, run_settings
    from peftbench.planning import plan
    from peftbench.suite_files import load_suite

    suite = write_suite(tmp_path / "small.json", models=["config:tiny-bert", "config:tiny-t5"], tasks=["bbc_topic",
                        "finefood_sentiment"], methods=["full", "lora", "houlsby"], scales=[8, 16], seeds=[0, 1])
    grid = plan(load_suite(str(suite)), load_data=False)
    target = Target("cpu", 64 * GB, "this machine")
    traces, real = [], memory.activations
    monkeypatch.setattr(memory, "activations", lambda *args: traces.append(args[3]) or real(*args))
    planned.cache_clear()
    _plan_or_reason.cache_clear()
    plans = grid_memory(grid, target)
    specs = _training_specs(grid)
    shapes = {run_settings(spec, target) for spec in specs if spec}
    assert len([spec for spec in specs if spec]) == 2 * 2 * 3 * 2 * 2 and len(traces) == len(shapes) == 2 * 3
    for spec, cached in zip(specs, plans):
        if spec is not None:
            alone = plan_memory(run_settings(spec, target))
            assert (cached.total, cached.parts()) == (alone.total, alone.parts()), spec["method_spec"]

