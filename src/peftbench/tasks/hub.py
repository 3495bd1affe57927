"""The seed papers' datasets, read from the Hugging Face hub. Templates are T5-style text-to-text prompts
(an instruction, the row's fields, then a cue such as "Answer:"), as in Pu et al. (FLAN-T5) and Lialin et al. (T5).

Where the rows come from is declared per task (`HubSource`): the repository, the revision, the files and how
`datasets` reads them, as each repository holds them on the hub. A task's files are fetched with
`huggingface_hub.snapshot_download` into the user's hub cache and read with `datasets.load_dataset` from that
snapshot. `load_dataset(repo_id)` would fetch the same files, but with `HF_HUB_OFFLINE=1` it never reads the hub
cache (datasets 5.2, load.py: offline mode raises before the README is looked up and falls back to its own Arrow
cache only); the snapshot route reads a cache filled once online, and fetches one GLUE/SuperGLUE config's files,
not the whole repository's."""

import string
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from peftbench.errors import UserError
from peftbench.tasks.spec import Row, TaskData, TaskSpec

OFFLINE_ALTERNATIVES = "or use an offline task (bbc_topic, finefood_sentiment, ...) or file:PATH"


@dataclass(frozen=True)
class HubSource:
    """A dataset repository on the hub as peftbench reads it: `data_files` maps each split peftbench uses to
    its files' glob pattern in the repository (as the README's `configs:` entry declares them), `config` names
    that entry (its `dataset_info` gives the features). The patterns are passed explicitly because `datasets`
    infers the file format from the card's first config (load.py, LocalDatasetModuleFactory), whose files a
    download of one config does not hold."""

    repo: str
    data_files: dict[str, str]
    config: str | None = None
    revision: str = "main"
    train_split: str = "train"
    test_split: str = "test"

    @property
    def label(self) -> str:
        config = f" ({self.config})" if self.config else ""
        revision = f" at revision {self.revision}" if self.revision != "main" else ""
        return f"{self.repo}{config}{revision}"

    @property
    def allow_patterns(self) -> list[str]:
        # The README carries the configs and features; a loading script is fetched only to name it in the error.
        return ["README.md", "*.py", *self.data_files.values()]


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"


def _fetch(source: HubSource) -> Path:
    """The snapshot folder of the task's files: downloaded into the hub cache, or found there offline."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError, \
        RevisionNotFoundError

    try:
        return Path(snapshot_download(source.repo, repo_type="dataset", revision=source.revision,
                                      allow_patterns=source.allow_patterns))
    except GatedRepoError:
        reason, fix = "the dataset is gated", "accept its terms on its hub page and log in with `hf auth login`"
    except RepositoryNotFoundError:
        reason = "the hub has no such dataset (or it is private)"
        fix = "check the dataset id, or log in with `hf auth login`"
    except RevisionNotFoundError:
        reason = f"the dataset has no revision '{source.revision}'"
        fix = "report this to peftbench: its hub layout changed"
    except LocalEntryNotFoundError as error:
        where = f"the hub cache ({constants.HF_HUB_CACHE})"
        if constants.HF_HUB_OFFLINE:
            reason = f"it is not in {where} and HF_HUB_OFFLINE is set"
            fix = "run once with network access (unset HF_HUB_OFFLINE) to download it"
        else:
            reason = f"the hub cannot be reached and it is not in {where} ({_first_line(error)})"
            fix = "check the network (or HF_ENDPOINT) and run again"
    except Exception as error:  # any other failure of the download: name it, never a traceback
        reason = f"{type(error).__name__}: {_first_line(error)}"
        fix = "check the network and the hub cache, then run again"
    raise UserError(f"cannot load dataset '{source.label}' from the Hugging Face hub: {reason}; {fix},"
                    f" leave the task out with --task, {OFFLINE_ALTERNATIVES}")


def _check_has_data(source: HubSource, folder: Path) -> None:
    files = [path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()]
    if any(fnmatch(name, pattern) for name in files for pattern in source.data_files.values()):
        return
    scripts = sorted(name for name in files if name.endswith(".py"))
    if scripts:
        raise UserError(f"dataset '{source.label}' holds only a loading script ({', '.join(scripts)}) and no data"
                        " files; `datasets` >= 4 no longer runs dataset scripts, so peftbench needs a revision with"
                        " data files (many script datasets have one in the hub's parquet export,"
                        f" revision refs/convert/parquet); {OFFLINE_ALTERNATIVES}")
    patterns = ", ".join(source.data_files.values())
    raise UserError(f"dataset '{source.label}' has no files matching {patterns} in {folder}; its layout on the hub"
                    f" has changed: report this to peftbench ({OFFLINE_ALTERNATIVES})")


def _needed_fields(spec: TaskSpec) -> list[str]:
    fields = [name for _, name, _, _ in string.Formatter().parse(spec.template) if name]
    return list(dict.fromkeys([*fields, spec.target_field]))


def _complete_rows(spec: TaskSpec, source: HubSource, split: str, rows: list[Row]) -> list[Row]:
    """The split's rows, checked against what the task reads: a missing column or an unmapped label is a
    changed dataset (one clear error, not a failed run later); rows with an empty field (a CSV cell read as
    None) cannot be rendered and are left out."""
    needed = _needed_fields(spec)
    missing = [name for name in needed if rows and name not in rows[0]]
    if missing:
        raise UserError(f"dataset '{source.label}' split '{split}' has columns {sorted(rows[0])} but task"
                        f" '{spec.name}' reads {missing}; report this to peftbench: the dataset changed")
    rows = [row for row in rows if all(row[name] is not None for name in needed)]
    if spec.kind == "classification":
        unknown = sorted({row[spec.target_field] for row in rows} - set(spec.label_map), key=str)
        if unknown:
            raise UserError(f"dataset '{source.label}' split '{split}' has label values {unknown} that task"
                            f" '{spec.name}' does not map (-1 marks unlabelled test rows); report this to peftbench")
    return rows


def _load(spec: TaskSpec, source: HubSource) -> TaskData:
    folder = _fetch(source)
    _check_has_data(source, folder)
    import datasets  # imported lazily: it is slow to import and only needed when a hub task runs

    datasets.disable_progress_bars()  # the run's own progress display owns the terminal
    try:
        splits = datasets.load_dataset(str(folder), source.config, data_files=source.data_files)
        train, test = list(splits[source.train_split]), list(splits[source.test_split])
    except Exception as error:  # a damaged or changed download: one line, whatever datasets raised
        # The repository's whole cache folder: a snapshot's files are links to blobs, which a new download reuses.
        raise UserError(f"cannot read dataset '{source.label}' from {folder} ({type(error).__name__}:"
                        f" {_first_line(error)}); delete {folder.parent.parent} to download it again") from None
    return TaskData(train=_complete_rows(spec, source, source.train_split, train),
                    test=_complete_rows(spec, source, source.test_split, test))


HUB_SOURCES: dict[str, HubSource] = {}  # task name -> where its rows come from


def hub_task(source: HubSource, **fields) -> TaskSpec:
    """A task whose rows `source` holds; the loader checks the rows against the spec it belongs to."""
    spec: TaskSpec | None = None
    HUB_SOURCES[fields["name"]] = source

    def load() -> TaskData:
        return _load(spec, source)

    spec = TaskSpec(load=load, source=f"hub:{source.label}", **fields)
    return spec


def _splits(folder: str, *splits: str) -> dict[str, str]:
    """Split files named `FOLDER/SPLIT-00000-of-0000N.parquet`, the layout of the hub's converted datasets."""
    return {split: f"{folder}/{split}-*" for split in splits}


# GLUE and SuperGLUE test labels are hidden (-1), so their validation split serves as the test set.
HUB_TASKS = [
    hub_task(
        # data/{train,test}-00000-of-00001.parquet; README: text, label ClassLabel(World, Sports, Business, Sci/Tech)
        HubSource("fancyzhx/ag_news", _splits("data", "train", "test")),
        name="ag_news", kind="classification",
        template="Classify the topic of this news article as world, sports, business or science.\n"
                 "Article: {text}\nAnswer:",
        target_field="label", label_map={0: "world", 1: "sports", 2: "business", 3: "science"},
        primary_metric="accuracy",
        description="4-way topic of an AG News article (120,000 train / 7,600 test)",
    ),
    hub_task(
        # cola/{train,validation,test}-00000-of-00001.parquet; sentence, label ClassLabel(unacceptable, acceptable), idx
        HubSource("nyu-mll/glue", _splits("cola", "train", "validation"), "cola", test_split="validation"),
        name="cola", kind="classification",
        template="Is this sentence grammatically acceptable or unacceptable?\nSentence: {sentence}\nAnswer:",
        target_field="label", label_map={0: "unacceptable", 1: "acceptable"},
        primary_metric="mcc",
        description="GLUE CoLA: is an English sentence grammatical (scored by Matthews correlation)",
    ),
    hub_task(
        # The dataset authors' repository: its main revision holds only README.md and the script e2e_nlg.py
        # (which datasets >= 4 refuses); the hub's parquet export of it holds the rows, with columns
        # meaning_representation and human_reference. Each MR repeats with several human references.
        HubSource("tuetschek/e2e_nlg", {split: f"default/{split}/*.parquet" for split in ("train", "test")},
                  revision="refs/convert/parquet"),
        name="e2e_nlg", kind="generation",
        template="Describe the restaurant with these attributes in fluent English.\n"
                 "Attributes: {meaning_representation}\nDescription:",
        target_field="human_reference", primary_metric="rougeL",
        description="E2E NLG: turn a restaurant meaning representation into a sentence (all references of an MR)",
    ),
    hub_task(
        # train.csv, validation.csv, test.csv at the top; README without configs or features, so datasets infers
        # the columns (id, dialogue, summary) and their types from the CSV
        HubSource("knkarthick/samsum", {"train": "train.csv", "test": "test.csv"}),
        name="samsum", kind="generation",
        template="Summarize the following dialogue.\nDialogue: {dialogue}\nSummary:",
        target_field="summary", primary_metric="rougeL",
        description="SAMSum: summarize a messenger-style chat",
    ),
    hub_task(
        # boolq/{train,validation,test}-00000-of-00001.parquet; question, passage, idx, label ClassLabel(False, True)
        HubSource("aps/super_glue", _splits("boolq", "train", "validation"), "boolq", test_split="validation"),
        name="boolq", kind="classification",
        # Hamilton & Mueller's prompt verbatim; the "?" is added here because BoolQ questions lack one.
        template="Using information in the passage, answer the following question: {question}? "
                 "### Passage: {passage} ### Answer:",
        target_field="label", label_map={0: "no", 1: "yes"},
        primary_metric="accuracy",
        description="SuperGLUE BoolQ: answer a yes/no question about a Wikipedia passage",
    ),
    hub_task(
        # rte/*.parquet; premise, hypothesis, idx, label ClassLabel(entailment, not_entailment)
        HubSource("aps/super_glue", _splits("rte", "train", "validation"), "rte", test_split="validation"),
        name="rte", kind="classification",
        template="Does the premise entail the hypothesis? Answer entailment or not_entailment.\n"
                 "Premise: {premise}\nHypothesis: {hypothesis}\nAnswer:",
        target_field="label", label_map={0: "entailment", 1: "not_entailment"},
        primary_metric="accuracy",
        description="SuperGLUE RTE: does the premise entail the hypothesis",
    ),
    hub_task(
        # copa/*.parquet; premise, choice1, choice2, question, idx, label ClassLabel(choice1, choice2)
        HubSource("aps/super_glue", _splits("copa", "train", "validation"), "copa", test_split="validation"),
        name="copa", kind="classification",
        # `question` is "cause" or "effect", so it slots into the question as a noun.
        template="Premise: {premise}\nWhat was the {question}? Answer 1 or 2.\n"
                 "Option 1: {choice1}\nOption 2: {choice2}\nAnswer:",
        target_field="label", label_map={0: "1", 1: "2"},
        primary_metric="accuracy",
        description="SuperGLUE COPA: pick the more plausible cause or effect of a premise",
    ),
    hub_task(
        # 3.0.0/train-0000{0,1,2}-of-00003.parquet, validation and test one file each; article, highlights, id
        HubSource("abisee/cnn_dailymail", _splits("3.0.0", "train", "test"), "3.0.0"),
        name="cnn_dailymail", kind="generation",
        template="Summarize the following news article.\nArticle: {article}\nSummary:",
        target_field="highlights", primary_metric="rougeL",
        description="CNN/DailyMail: write the highlights of a news article",
    ),
]
