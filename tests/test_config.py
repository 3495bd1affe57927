import pytest

from peftbench.config import MethodSpec, Suite, load_suite, scale_bucket
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


def test_epochs_per_scale_follow_pu_et_al():
    suite = Suite(name="s", models=["m/x"], tasks=["bbc_topic"], methods=["full"], scales=["low", "medium", 5000])
    assert [suite.epochs_for(s) for s in suite.scales] == [10, 5, 1]
    assert [suite.scale_size(s) for s in suite.scales] == [100, 1000, 5000]
    assert scale_bucket(100) == "low" and scale_bucket(101) == "medium" and scale_bucket(20000) == "high"


def test_builtin_quickstart_loads():
    suite = load_suite("quickstart")
    assert suite.models == ["offline:minilm-l6"]
    assert suite.methods == ["full", "lora", "ia3", "bitfit", "ln_tuning"]


def test_unknown_builtin_suite_hint():
    with pytest.raises(UserError, match="Did you mean 'quickstart'"):
        load_suite("quikstart")
