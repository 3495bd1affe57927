"""Hub tasks render hand-written rows shaped like the real dataset rows; nothing here touches the network."""

import pytest

from peftbench.tasks.hub import HUB_SOURCES, HUB_TASKS

SPECS = {spec.name: spec for spec in HUB_TASKS}

# Every raw label id each classification dataset uses.
DATASET_LABEL_IDS = {"ag_news": {0, 1, 2, 3}, "cola": {0, 1}, "boolq": {0, 1}, "rte": {0, 1}, "copa": {0, 1}}

RENDER_CASES = [
    ("ag_news",
     {"text": "Wall St. Bears Claw Back Into the Black (Reuters)", "label": 2},
     "Classify the topic of this news article as world, sports, business or science.\n"
     "Article: Wall St. Bears Claw Back Into the Black (Reuters)\nAnswer:",
     "business"),
    ("ag_news",
     {"text": "Phelps wins another gold in Athens", "label": 1},
     "Classify the topic of this news article as world, sports, business or science.\n"
     "Article: Phelps wins another gold in Athens\nAnswer:",
     "sports"),
    ("cola",
     {"sentence": "The more we study verbs, the crazier they get.", "label": 1, "idx": 1},
     "Is this sentence grammatically acceptable or unacceptable?\n"
     "Sentence: The more we study verbs, the crazier they get.\nAnswer:",
     "acceptable"),
    ("cola",
     {"sentence": "They drank the pub.", "label": 0, "idx": 2},
     "Is this sentence grammatically acceptable or unacceptable?\nSentence: They drank the pub.\nAnswer:",
     "unacceptable"),
    ("e2e_nlg",
     {"meaning_representation": "name[The Eagle], eatType[coffee shop]",
      "human_reference": "The Eagle is a coffee shop."},
     "Describe the restaurant with these attributes in fluent English.\n"
     "Attributes: name[The Eagle], eatType[coffee shop]\nDescription:",
     "The Eagle is a coffee shop."),
    ("samsum",
     {"id": "13818513", "dialogue": "Amanda: I baked cookies. Do you want some?\nJerry: Sure!",
      "summary": "Amanda baked cookies and will bring Jerry some."},
     "Summarize the following dialogue.\nDialogue: Amanda: I baked cookies. Do you want some?\nJerry: Sure!\n"
     "Summary:",
     "Amanda baked cookies and will bring Jerry some."),
    ("boolq",
     {"question": "is windows movie maker part of windows essentials",
      "passage": "Windows Movie Maker is a discontinued video editing software by Microsoft.",
      "idx": 0, "label": 1},
     "Using information in the passage, answer the following question: "
     "is windows movie maker part of windows essentials? ### Passage: "
     "Windows Movie Maker is a discontinued video editing software by Microsoft. ### Answer:",
     "yes"),
    ("rte",
     {"premise": "No weapons of mass destruction found in Iraq yet.",
      "hypothesis": "Weapons of mass destruction found in Iraq.", "idx": 0, "label": 1},
     "Does the premise entail the hypothesis? Answer entailment or not_entailment.\n"
     "Premise: No weapons of mass destruction found in Iraq yet.\n"
     "Hypothesis: Weapons of mass destruction found in Iraq.\nAnswer:",
     "not_entailment"),
    ("copa",
     {"premise": "My body cast a shadow over the grass.", "choice1": "The sun was rising.",
      "choice2": "The grass was cut.", "question": "cause", "idx": 0, "label": 0},
     "Premise: My body cast a shadow over the grass.\nWhat was the cause? Answer 1 or 2.\n"
     "Option 1: The sun was rising.\nOption 2: The grass was cut.\nAnswer:",
     "1"),
    ("copa",
     {"premise": "The man broke his toe.", "choice1": "He got a hole in his sock.",
      "choice2": "He dropped a hammer on his foot.", "question": "cause", "idx": 1, "label": 1},
     "Premise: The man broke his toe.\nWhat was the cause? Answer 1 or 2.\n"
     "Option 1: He got a hole in his sock.\nOption 2: He dropped a hammer on his foot.\nAnswer:",
     "2"),
    ("cnn_dailymail",
     {"article": "LONDON, England (Reuters) -- Harry Potter star Daniel Radcliffe turns 18.",
      "highlights": "Daniel Radcliffe turns 18 on Monday.", "id": "42c027e4"},
     "Summarize the following news article.\n"
     "Article: LONDON, England (Reuters) -- Harry Potter star Daniel Radcliffe turns 18.\nSummary:",
     "Daniel Radcliffe turns 18 on Monday."),
]


def test_hub_tasks_are_the_seed_datasets():
    assert list(SPECS) == ["ag_news", "cola", "e2e_nlg", "samsum", "boolq", "rte", "copa", "cnn_dailymail"]


def test_every_hub_task_has_a_render_case():
    assert {name for name, *_ in RENDER_CASES} == set(SPECS)


@pytest.mark.parametrize(("name", "row", "expected_prompt", "expected_target"), RENDER_CASES,
                         ids=[f"{case[0]}-{i}" for i, case in enumerate(RENDER_CASES)])
def test_prompt_and_target_render(name, row, expected_prompt, expected_target):
    spec = SPECS[name]
    assert spec.prompt(row) == expected_prompt
    assert spec.target(row) == expected_target


def test_boolq_prompt_is_hamilton_and_mueller_format():
    question, passage = "does ethanol take more energy make that produces", "Ethanol fuel is ethyl alcohol."
    expected = (f"Using information in the passage, answer the following question: {question}? "
                f"### Passage: {passage} ### Answer:")
    assert SPECS["boolq"].prompt({"question": question, "passage": passage, "idx": 3, "label": 0}) == expected
    assert SPECS["boolq"].labels == ["no", "yes"]


@pytest.mark.parametrize("name", sorted(DATASET_LABEL_IDS))
def test_classification_labels_cover_dataset_and_are_distinct(name):
    spec = SPECS[name]
    assert spec.kind == "classification"
    assert set(spec.label_map) >= DATASET_LABEL_IDS[name]
    assert len(spec.labels) == len(spec.label_map)
    assert all(label == label.lower() for label in spec.labels)


def test_only_the_listed_tasks_are_classification():
    assert {spec.name for spec in HUB_TASKS if spec.kind == "classification"} == set(DATASET_LABEL_IDS)


@pytest.mark.parametrize("spec", HUB_TASKS, ids=lambda spec: spec.name)
def test_spec_is_complete_without_loading(spec):
    """What the task reads is declared (loading it through the real loader: test_hub_replicas.py): a source
    whose label the task shows, and a file pattern for each split it takes rows from."""
    source = HUB_SOURCES[spec.name]
    assert spec.source == f"hub:{source.label}" and source.repo in spec.source
    assert {source.train_split, source.test_split} <= set(source.data_files), "a split with no files to read"
    assert spec.source.startswith("hub:")
    assert spec.description and "\n" not in spec.description
    expected_metric = {"classification": "accuracy", "generation": "rougeL"}[spec.kind]
    assert spec.primary_metric == ("mcc" if spec.name == "cola" else expected_metric)
