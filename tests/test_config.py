import pytest

from peftbench.config import MethodSpec, Suite, scale_bucket
from peftbench.suite_files import load_suite
from peftbench.errors import UserError


def test_method_spec_round_trip():
    spec = MethodSpec.parse("lora[r=8, alpha=16]")
    assert spec.name == "lora" and spec.options == {"r": "8", "alpha": "16"}
    assert str(spec) == "lora[r=8,alpha=16]"
    assert str(MethodSpec.parse("ia3")) == "ia3"


@pytest.mark.parametrize("text", ["lora[r]", "lora[=3]", "lo ra", "lora[r=8"])
def test_malformed_method_spec(text):
    with pytest.raises(UserError, match="key=value|malformed"):
        MethodSpec.parse(text)


def test_unknown_key_gets_a_hint(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("models: [config:tiny-bert]\ntasks: [bbc_topic]\nmethods: [lora]\nlearning_rate: {lora: 1e-3}\n")
    with pytest.raises(UserError, match="unknown key 'learning_rate'. Did you mean 'learning_rates'"):
        load_suite(str(path))


def test_nested_unknown_key(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("models: [m/x]\ntasks: [bbc_topic]\nmethods: [lora]\nschedule: {warmup: 0.1}\n")
    with pytest.raises(UserError, match="unknown key 'schedule.warmup'. Did you mean 'warmup_ratio'"):
        load_suite(str(path))


def test_scales_and_epochs_follow_pu_et_al():
    suite = Suite(name="s", models=["m/x"], tasks=["bbc_topic"], methods=["full"],
                  scales=["low", "medium", "high", 5000, "all"])
    # named scales are "at most" (Pu et al.: CoLA's high scale is its whole pool); numbers are exact
    sizes = [suite.training_size(s, pool=7696, task="cola") for s in suite.scales]
    assert sizes == [100, 1000, 7696, 5000, 7696]
    assert [suite.epochs_for(s, n) for s, n in zip(suite.scales, sizes)] == [10, 5, 1, 1, 1]
    assert suite.epochs_for("all", 80) == 10  # `all` takes the epochs of the size it turns out to be
    with pytest.raises(UserError, match="use a scale of at most 7696"):
        suite.training_size(8000, pool=7696, task="cola")
    assert scale_bucket(100) == "low" and scale_bucket(101) == "medium" and scale_bucket(20000) == "high"


def test_builtin_quickstart_loads():
    suite = load_suite("quickstart")
    assert suite.models == ["offline:minilm-l6"]
    assert suite.methods == ["full", "lora", "ia3", "bitfit", "ln_tuning"]


def test_unknown_builtin_suite_hint():
    with pytest.raises(UserError, match="Did you mean 'quickstart'"):
        load_suite("quikstart")


def test_settings_apply_over_the_file_and_name_their_flag_when_wrong():
    suite = load_suite("quickstart", ["epochs=3", "schedule.peak_factor=5", "learning_rates.lora=1e-3",
                                      "scales=[low, 250]"])
    assert suite.epochs == 3 and suite.schedule.peak_factor == 5 and suite.learning_rates == {"lora": 1e-3}
    assert suite.scales == ["low", 250] and suite.methods == load_suite("quickstart").methods
    assert load_suite("quickstart", ["epochs.low=20"]).epochs == {"low": 20}  # into the suite's own mapping
    with pytest.raises(UserError, match=r"^--set batch_size=-1: bad value for 'batch_size'"):
        load_suite("quickstart", ["batch_size=-1"])
    with pytest.raises(UserError, match=r"^--set schedule\.warmup=1: unknown key 'schedule\.warmup'"):
        load_suite("quickstart", ["schedule.warmup=1"])


def test_derived_names_describe_the_axes():
    from peftbench.flag_grids import derived_name, within

    base = load_suite("quickstart")
    mine = base.model_copy(update={"tasks": ["file:data/my reviews.jsonl"], "methods": ["lora", "ia3[layout=tfew]"]})
    assert derived_name(mine) == "minilm-l6.my-reviews.lora+ia3.low" and not within(mine, base)
    assert within(base.model_copy(update={"methods": ["lora"]}), base)
    many = base.model_copy(update={"methods": ["full", "lora", "ia3", "bitfit", "ln_tuning"]})
    assert derived_name(many).split(".")[2] == "full+lora+ia3+2more"
