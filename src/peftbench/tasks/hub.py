"""The seed papers' datasets, read from the Hugging Face hub. Templates are T5-style text-to-text prompts
(an instruction, the row's fields, then a cue such as "Answer:"), as in Pu et al. (FLAN-T5) and Lialin et al. (T5)."""

from collections.abc import Callable

from peftbench.errors import UserError
from peftbench.tasks.spec import TaskData, TaskSpec


def _hub_loader(path: str, config: str | None, train_split: str, test_split: str) -> Callable[[], TaskData]:
    def load() -> TaskData:
        import datasets  # imported lazily: it is slow to import and only needed when a hub task runs

        def rows(split: str) -> list[dict]:
            try:
                return list(datasets.load_dataset(path, config, split=split))
            except (ConnectionError, OSError, ValueError) as error:
                raise UserError(f"cannot load dataset '{path}' ({split}) from the Hugging Face hub"
                                f" ({type(error).__name__}: {str(error).splitlines()[0]}); check the network,"
                                " or use an offline task (bbc_topic, finefood_sentiment, ...) or file:PATH") from None

        return TaskData(train=rows(train_split), test=rows(test_split))

    return load


# GLUE and SuperGLUE test labels are hidden, so their validation split serves as the test set.
HUB_TASKS = [
    TaskSpec(
        name="ag_news", kind="classification", load=_hub_loader("fancyzhx/ag_news", None, "train", "test"),
        template="Classify the topic of this news article as world, sports, business or science.\n"
                 "Article: {text}\nAnswer:",
        target_field="label", label_map={0: "world", 1: "sports", 2: "business", 3: "science"},
        primary_metric="accuracy", source="hub:fancyzhx/ag_news",
        description="4-way topic of an AG News article (120,000 train / 7,600 test)",
    ),
    TaskSpec(
        name="cola", kind="classification", load=_hub_loader("nyu-mll/glue", "cola", "train", "validation"),
        template="Is this sentence grammatically acceptable or unacceptable?\nSentence: {sentence}\nAnswer:",
        target_field="label", label_map={0: "unacceptable", 1: "acceptable"},
        primary_metric="mcc", source="hub:nyu-mll/glue (cola)",
        description="GLUE CoLA: is an English sentence grammatical (scored by Matthews correlation)",
    ),
    TaskSpec(
        # The dataset authors' parquet copy: GEM/e2e_nlg ships a loading script, which `datasets` >= 4 refuses.
        name="e2e_nlg", kind="generation", load=_hub_loader("tuetschek/e2e_nlg", None, "train", "test"),
        template="Describe the restaurant with these attributes in fluent English.\n"
                 "Attributes: {meaning_representation}\nDescription:",
        target_field="human_reference", primary_metric="rougeL", source="hub:tuetschek/e2e_nlg",
        description="E2E NLG: turn a restaurant meaning representation into a sentence",
    ),
    TaskSpec(
        name="samsum", kind="generation", load=_hub_loader("knkarthick/samsum", None, "train", "test"),
        template="Summarize the following dialogue.\nDialogue: {dialogue}\nSummary:",
        target_field="summary", primary_metric="rougeL", source="hub:knkarthick/samsum",
        description="SAMSum: summarize a messenger-style chat",
    ),
    TaskSpec(
        name="boolq", kind="classification", load=_hub_loader("aps/super_glue", "boolq", "train", "validation"),
        # Hamilton & Mueller's prompt verbatim; the "?" is added here because BoolQ questions lack one.
        template="Using information in the passage, answer the following question: {question}? "
                 "### Passage: {passage} ### Answer:",
        target_field="label", label_map={0: "no", 1: "yes"},
        primary_metric="accuracy", source="hub:aps/super_glue (boolq)",
        description="SuperGLUE BoolQ: answer a yes/no question about a Wikipedia passage",
    ),
    TaskSpec(
        name="rte", kind="classification", load=_hub_loader("aps/super_glue", "rte", "train", "validation"),
        template="Does the premise entail the hypothesis? Answer entailment or not_entailment.\n"
                 "Premise: {premise}\nHypothesis: {hypothesis}\nAnswer:",
        target_field="label", label_map={0: "entailment", 1: "not_entailment"},
        primary_metric="accuracy", source="hub:aps/super_glue (rte)",
        description="SuperGLUE RTE: does the premise entail the hypothesis",
    ),
    TaskSpec(
        name="copa", kind="classification", load=_hub_loader("aps/super_glue", "copa", "train", "validation"),
        # `question` is "cause" or "effect", so it slots into the question as a noun.
        template="Premise: {premise}\nWhat was the {question}? Answer 1 or 2.\n"
                 "Option 1: {choice1}\nOption 2: {choice2}\nAnswer:",
        target_field="label", label_map={0: "1", 1: "2"},
        primary_metric="accuracy", source="hub:aps/super_glue (copa)",
        description="SuperGLUE COPA: pick the more plausible cause or effect of a premise",
    ),
    TaskSpec(
        name="cnn_dailymail", kind="generation",
        load=_hub_loader("abisee/cnn_dailymail", "3.0.0", "train", "test"),
        template="Summarize the following news article.\nArticle: {article}\nSummary:",
        target_field="highlights", primary_metric="rougeL", source="hub:abisee/cnn_dailymail (3.0.0)",
        description="CNN/DailyMail: write the highlights of a news article",
    ),
]
