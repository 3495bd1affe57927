import pytest

from peftbench.evaluate import OTHER, classification_metrics, generation_metrics, match_label


@pytest.mark.parametrize("text,expected", [
    ("Yes", "yes"), (" yes.\n###", "yes"), ("NO", "no"), ("###", OTHER), ("", OTHER), ("yes no", OTHER),
])
def test_match_label_ignores_case_whitespace_and_trailing_punctuation(text, expected):
    assert match_label(text, ["no", "yes"]) == expected


def test_classification_metrics_by_hand():
    golds = ["yes", "yes", "yes", "no"]
    predictions = ["yes", "no", OTHER, "no"]
    metrics = classification_metrics(golds, predictions, ["no", "yes"])
    assert metrics["accuracy"] == 0.5
    assert metrics["balanced_accuracy"] == pytest.approx((1 / 3 + 1) / 2)
    assert metrics["other_rate"] == 0.25
    assert metrics["prediction_counts"] == {"no": 2, "yes": 1, OTHER: 1}
    # macro-F1 over the task labels: yes P=1 R=1/3 -> 0.5; no P=1/2 R=1 -> 2/3
    assert metrics["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert metrics["per_example"] == [1, 0, 0, 1]


def test_rouge_identical_and_disjoint():
    metrics = generation_metrics([["the cat sat"], ["a b"]], ["the cat sat", "x y"])
    assert metrics["rougeL"] == pytest.approx(0.5)
    assert metrics["rouge1"] == pytest.approx(0.5)
    assert metrics["per_example"] == [1.0, 0.0]
    assert (metrics["n_test"], metrics["n_references"]) == (2, 2)


def test_rouge_takes_the_best_of_an_inputs_references():
    references = [["The Eagle is a coffee shop.", "A coffee shop called The Eagle serves French food."]] * 2
    metrics = generation_metrics(references, ["A coffee shop called The Eagle serves French food.", "The Eagle is"])
    assert metrics["per_example"][0] == 1.0  # equal to the second reference
    # "The Eagle is" against its best reference, the first: LCS 3 of 3 and 6 words -> F1 = 2 * 1 * 0.5 / 1.5
    assert metrics["per_example"][1] == pytest.approx(round(2 / 3, 4))
    assert (metrics["n_test"], metrics["n_references"]) == (2, 4)
