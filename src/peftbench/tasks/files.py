"""A user's own data: `file:PATH` with JSONL or CSV rows, `text`+`label` (classification) or
`input`+`target` (generation), optionally with a held-out test file."""

import csv
import hashlib
import json
from pathlib import Path

from peftbench.errors import UserError
from peftbench.tasks.spec import Row, TaskData, TaskSpec

COLUMNS = {"classification": ("text", "label"), "generation": ("input", "target")}


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"data file '{path}' does not exist; check the path in `file:`")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise UserError(f"data file '{path}' line {line} is not valid UTF-8; re-save the file as UTF-8") from None


def read_rows(path: Path) -> list[Row]:
    text = _read_text(path)
    if path.suffix.lower() in {".jsonl", ".json", ".ndjson"}:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
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
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        return list(csv.DictReader(text.splitlines(), delimiter=delimiter))
    raise UserError(f"data file '{path}' has an unknown format; use a .jsonl or .csv file")


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


def _check_rows(path: Path, rows: list[Row], columns: tuple[str, str]) -> list[Row]:
    clean = []
    for number, row in enumerate(rows, start=1):
        for column in columns:
            value = row.get(column)
            if value is None or str(value).strip() == "":
                raise UserError(f"data file '{path}' row {number} has an empty '{column}'; fill it or drop the row")
        clean.append({column: str(row[column]).strip() for column in columns})
    return clean


def file_digest(*paths: Path | None) -> str:
    digest = hashlib.sha256()
    for path in paths:
        if path is not None:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def file_task(path: Path, test_path: Path | None = None) -> TaskSpec:
    rows = read_rows(path)
    kind = _kind_of(path, rows)
    columns = COLUMNS[kind]
    train = _check_rows(path, rows, columns)
    test = None
    if test_path is not None:
        test_rows = read_rows(test_path)
        if not test_rows:
            raise UserError(f"test file '{test_path}' has no rows; add examples to it")
        if _kind_of(test_path, test_rows) != kind:
            raise UserError(f"test file '{test_path}' must have the same columns as '{path}' ({', '.join(columns)})")
        test = _check_rows(test_path, test_rows, columns)
    label_map: dict[object, str] = {}
    if kind == "classification":
        labels = sorted({row["label"] for row in train})
        if len(labels) < 2:
            raise UserError(f"data file '{path}' has only one label ('{labels[0]}'); classification needs two or more")
        unseen = sorted({row["label"] for row in test or []} - set(labels))
        if unseen:
            raise UserError(f"test file '{test_path}' has labels not in '{path}': {unseen}; add training examples for them")
        label_map = {label: label for label in labels}
    data = TaskData(train=train, test=test)
    name = f"file:{path}"
    return TaskSpec(
        name=name, kind=kind, load=lambda: data,
        template="{text}" if kind == "classification" else "{input}",
        target_field=columns[1], label_map=label_map,
        primary_metric="accuracy" if kind == "classification" else "rougeL",
        source=f"{name} (sha256 {file_digest(path, test_path)})",
        description=f"user data from {path}" + (f" with test file {test_path}" if test_path else ""),
    )
