"""Baselines are objects behind the methods' vocabulary: each says where it applies and how it scores, and
the planner, the executor, the estimate and the report ask them rather than their names."""

import typing
from types import SimpleNamespace

import pytest

from peftbench.baselines import BASELINES
from peftbench.config import Suite
from peftbench.methods import METHODS


def test_the_suite_accepts_exactly_the_registered_baselines():
    [literal] = typing.get_args(Suite.model_fields["baselines"].annotation)
    assert set(typing.get_args(literal)) == set(BASELINES)


@pytest.mark.parametrize(("kind", "family", "applies"), [
    ("classification", "encoder", {"majority"}), ("classification", "decoder", {"majority", "zero_shot"}),
    ("generation", "seq2seq", {"zero_shot"}), ("generation", "decoder", {"zero_shot"})])
def test_each_baseline_says_where_it_applies(kind, family, applies):
    assert {name for name, baseline in BASELINES.items() if baseline.applies(kind, family)} == applies


def test_majority_answers_the_most_frequent_training_label():
    task = SimpleNamespace(target=lambda row: row["label"], labels=["yes", "no"])
    train = [{"label": "no"}, {"label": "yes"}, {"label": "no"}]
    test = [{"label": "yes"}, {"label": "no"}, {"label": "yes"}, {"label": "yes"}]
    metrics = BASELINES.get("majority").score_without_model(task, train, test)
    assert metrics["majority_label"] == "no" and metrics["accuracy"] == 0.25
    assert metrics["prediction_counts"] == {"yes": 0, "no": 4, "<other>": 0}
    train.append({"label": "yes"})
    train.append({"label": "yes"})
    assert BASELINES.get("majority").score_without_model(task, train, test)["accuracy"] == 0.75


def test_baselines_and_methods_answer_the_same_questions():
    majority, zero_shot, full, lora = (BASELINES.get("majority"), BASELINES.get("zero_shot"), METHODS.get("full"),
                                       METHODS.get("lora"))
    assert (majority.trains, majority.uses_model, majority.is_reference) == (False, False, False)
    assert (zero_shot.trains, zero_shot.uses_model, zero_shot.is_reference) == (False, True, False)
    assert (full.trains, full.uses_model, full.is_reference) == (True, True, True)
    assert (lora.trains, lora.is_reference) == (True, False)
    assert [name for name, method in METHODS.items() if method.is_reference] == ["full"]
