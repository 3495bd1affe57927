"""A user's own data: `file:PATH` with JSONL or CSV rows, `text`+`label` (classification) or
`input`+`target` (generation), or other columns mapped onto those, optionally with a held-out test file.

One label rule for both formats: a label is a class name, a string or an integer (true/false too). A label that
reads as a number with a decimal point or an exponent (1.0, 0.37, 1e3), a JSON number or string or CSV text
alike, is refused: 1.0 beside 1 would be two classes, and many distinct decimals are a score to regress,
not classes. A test file's inputs must not repeat the training file's (see `file_task`)."""

import csv
import hashlib
import io
import json
import re
from pathlib import Path

from peftbench.errors import UserError, read_file
from peftbench.tasks.spec import Row, TaskData, TaskSpec

COLUMNS = {"classification": ("text", "label"), "generation": ("input", "target")}
DECIMAL = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
INTEGER = re.compile(r"[+-]?\d+")


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"data file '{path}' does not exist; check the path in `file:`")
    raw = read_file(path, "data file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise UserError(f"data file '{path}' line {line} is not valid UTF-8; re-save the file as UTF-8") from None


def read_rows(path: Path) -> list[Row]:
    """Rows exactly as the file holds them. JSON Lines are split at line feeds only (a raw U+2028 or U+0085
    inside a JSON string is content, not a line break), CSV by the csv module, which keeps quoted newlines."""
    text = _read_text(path)
    if path.suffix.lower() in {".jsonl", ".json", ".ndjson"}:
        rows = []
        for number, line in enumerate(text.split("\n"), start=1):
            line = line.removesuffix("\r")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"data file '{path}' line {number} is not valid JSON ({error.msg});"
                                " write one JSON object per line") from None
            if not isinstance(row, dict):
                raise UserError(f"data file '{path}' line {number} is not a JSON object; write one object per line")
            rows.append(row)
        return rows
    if path.suffix.lower() in {".csv", ".tsv"}:
        return _table_rows(path, text, "\t" if path.suffix.lower() == ".tsv" else ",")
    raise UserError(f"data file '{path}' has an unknown format; use a .jsonl or .csv file")


def _table_rows(path: Path, text: str, delimiter: str) -> list[Row]:
    """CSV/TSV rows under their header, read exactly or refused: a repeated header column (which value would
    count?) or a line with more or fewer fields than the header (an unquoted comma in a text would cut it short
    and make its tail a label) is a mistake to fix in the file, not to guess at."""
    name, separators = ("TSV", "tabs") if delimiter == "\t" else ("CSV", "commas")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, [])
        if repeated := sorted({column for column in header if header.count(column) > 1}):
            raise UserError(f"data file '{path}': the header repeats column {', '.join(map(repr, repeated))};"
                            " give each column one name")
        rows = []
        for fields in reader:
            if not fields:
                continue  # a blank line
            if len(fields) != len(header):
                raise UserError(f"data file '{path}' line {reader.line_num} has {len(fields)} fields but the header"
                                f" has {len(header)}; quote texts that contain {separators} (\"like, this\")")
            rows.append(dict(zip(header, fields)))
        return rows
    except csv.Error as error:
        raise UserError(f"data file '{path}' is not valid {name} ({error}); check its quoting") from None


def _kind_of(path: Path, rows: list[Row]) -> str:
    if not rows:
        raise UserError(f"data file '{path}' has no rows; add examples to it")
    fields = set(rows[0])
    for kind, columns in COLUMNS.items():
        if set(columns) <= fields:
            return kind
    if "text" in fields:
        raise UserError(f"data file '{path}' has no 'label' column; add a 'label' field to every row")
    if "input" in fields:
        raise UserError(f"data file '{path}' has no 'target' column; add a 'target' field to every row")
    raise UserError(f"data file '{path}' needs columns 'text' and 'label' (classification)"
                    f" or 'input' and 'target' (generation); it has {sorted(fields)}")


def _value(path: Path, number: int, column: str, value: object, is_label: bool) -> str:
    """A row's text or label as a string, refusing what would be silently turned into one: a list or an
    object is no text, nor a label (decimal labels are refused before, for the whole file at once)."""
    if isinstance(value, str):
        if not value.strip():
            raise UserError(f"data file '{path}' row {number} has an empty '{column}'; fill it or drop the row")
        # Labels are names: surrounding spaces ("a, b" CSV style) are not part of them. Texts stay exact.
        return value.strip() if is_label else value
    if value is None:
        raise UserError(f"data file '{path}' row {number} has an empty '{column}'; fill it or drop the row")
    if is_label and isinstance(value, int):  # true/false and integer class ids are labels as they are
        return json.dumps(value)
    kind = {dict: "an object", list: "a list", float: "a number with a decimal point", int: "a number",
            bool: "true/false"}.get(type(value), type(value).__name__)
    fix = "write labels as strings or integers" if is_label else "write the text as a string"
    raise UserError(f"data file '{path}' row {number}: '{column}' is {kind} ({json.dumps(value)[:40]}); {fix}")


def _is_decimal(label: object) -> bool:
    """Whether a label reads as a number with a decimal point or an exponent, as a JSON number or as text."""
    if isinstance(label, float):
        return True
    text = label.strip() if isinstance(label, str) else ""
    return DECIMAL.fullmatch(text) is not None and INTEGER.fullmatch(text) is None


def _refuse_decimal_labels(path: Path, rows: list[Row], column: str) -> None:
    decimal = [(number, row[column]) for number, row in enumerate(rows, start=1) if _is_decimal(row.get(column))]
    if decimal:
        number, value = decimal[0]
        raise UserError(f"data file '{path}': '{column}' is a number with a decimal point in {len(decimal)} of"
                        f" {len(rows)} rows (row {number}: {json.dumps(value)[:40]}); labels are class names: write"
                        " integers or names (1.0 beside 1 would be two classes; a score to regress is no class)")


def _check_rows(path: Path, rows: list[Row], columns: tuple[str, str], kind: str) -> list[Row]:
    if kind == "classification":
        _refuse_decimal_labels(path, rows, columns[1])
    clean = []
    for number, row in enumerate(rows, start=1):
        text_column, target_column = columns
        clean.append({text_column: _value(path, number, text_column, row.get(text_column), is_label=False),
                      target_column: _value(path, number, target_column, row.get(target_column),
                                            is_label=kind == "classification")})
    return clean


def file_digest(*paths: Path | None) -> str:
    digest = hashlib.sha256()
    for path in paths:
        if path is not None:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _mapped(path: Path, rows: list[Row], mapping: dict[str, str]) -> list[Row]:
    """Rows with the file's own columns renamed to the standard ones (`{"text": "review"}`: the column
    `review` is read as `text`)."""
    if not mapping or not rows:
        return rows
    missing = [f"{own} ({standard}_field)" for standard, own in mapping.items() if own not in rows[0]]
    if missing:
        raise UserError(f"data file '{path}' has no column {', '.join(missing)}; its columns are"
                        f" {sorted(rows[0])}: fix the field names")
    return [{**row, **{standard: row.get(own) for standard, own in mapping.items()}} for row in rows]


def _shared_inputs(train: list[Row], test: list[Row], column: str) -> tuple[int, int]:
    """(test inputs also in the training rows, distinct test inputs), runs of whitespace read as one space so
    that a re-saved or re-wrapped copy still counts."""
    seen = {" ".join(row[column].split()) for row in train}
    inputs = {" ".join(row[column].split()) for row in test}
    return len(inputs & seen), len(inputs)


def file_task(path: Path, test_path: Path | None = None, mapping: dict[str, str] | None = None,
              allow_overlap: bool = False) -> TaskSpec:
    """The task of a data file, every row checked now (at plan time). A test file sharing inputs with the
    training file is refused with the counts unless `allow_overlap`: a score on inputs the model trained on
    measures memory, and the automatic splits never do this (identical inputs stay in one split). Allowed,
    the counts become a note the plan prints and a part of the task's description, which runs store."""
    mapping = mapping or {}
    rows = _mapped(path, read_rows(path), mapping)
    kind = _kind_of(path, rows)
    columns = COLUMNS[kind]
    train = _check_rows(path, rows, columns, kind)
    test = None
    if test_path is not None:
        test_rows = _mapped(test_path, read_rows(test_path), mapping)
        if not test_rows:
            raise UserError(f"test file '{test_path}' has no rows; add examples to it")
        if _kind_of(test_path, test_rows) != kind:
            raise UserError(f"test file '{test_path}' must have the same columns as '{path}' ({', '.join(columns)})")
        test = _check_rows(test_path, test_rows, columns, kind)
    label_map: dict[object, str] = {}
    if kind == "classification":
        labels = sorted({row["label"] for row in train})
        if len(labels) < 2:
            raise UserError(f"data file '{path}' has only one label ('{labels[0]}'); classification needs two or more")
        unseen = sorted({row["label"] for row in test or []} - set(labels))
        if unseen:
            raise UserError(f"test file '{test_path}' has labels not in '{path}': {unseen}; add training examples for them")
        label_map = {label: label for label in labels}
    notes = ()
    if test is not None:
        shared, distinct = _shared_inputs(train, test, columns[0])
        overlap = f"test file '{test_path}' shares {shared} of its {distinct} distinct inputs with '{path}'"
        if shared and not allow_overlap:
            raise UserError(f"{overlap}, so its score would reward remembering them; remove them from one file, or"
                            " pass --allow-overlap (a suite's file task: allow_overlap: true) to score them anyway")
        notes = (f"{overlap} (allowed by --allow-overlap)",) if shared else ()
    data = TaskData(train=train, test=test)
    name = f"file:{path}"
    columns_note = "".join(f", {standard}={own}" for standard, own in mapping.items())
    return TaskSpec(
        name=name, kind=kind, load=lambda: data,
        template="{text}" if kind == "classification" else "{input}",
        target_field=columns[1], label_map=label_map,
        primary_metric="accuracy" if kind == "classification" else "rougeL",
        source=f"{name} (sha256 {file_digest(path, test_path)}{columns_note})",
        description=f"user data from {path}" + (f" with test file {test_path}" if test_path else "")
        + "".join(f"; {note}" for note in notes),
        notes=notes,
    )
