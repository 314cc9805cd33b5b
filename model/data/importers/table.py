"""A generic table of posts: CSV (with a header), JSONL or Parquet.

Columns: ``post_id``, ``user_id``, ``time`` (unix seconds or ISO 8601), ``image`` (a path
relative to the table's folder, an absolute path, or an http(s) URL), ``text``, and
optionally ``split`` (train, val or test). Other columns are ignored. Parquet is read
with pyarrow, one record batch at a time.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from model.data.importers.rows import BadRow, Candidate, parse_time

REQUIRED_COLUMNS = ("post_id", "user_id", "time", "image", "text")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def read_table(path: Path) -> Iterator[Candidate | BadRow]:
    """Every row of the table, as a candidate post or a bad row with its reason."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"table {path}: unknown extension {path.suffix!r} (one of {', '.join(FORMATS)})")
    raw_rows = {"csv": _csv_rows, "jsonl": _jsonl_rows, "parquet": _parquet_rows}[kind](path)
    for where, row in raw_rows:
        yield row if isinstance(row, BadRow) else _candidate(where, row)


def _candidate(where: str, row: dict) -> Candidate | BadRow:
    values = {}
    for column in REQUIRED_COLUMNS:
        value = row.get(column)
        blank = isinstance(value, str) and not value.strip() and column != "text"  # build reports an empty text
        if value is None or blank:
            if column == "time" and row.get("split"):
                values[column] = None  # a given split needs no time to order by
                continue
            return BadRow(where, "missing_field", f"column '{column}' is missing or empty", _id(row))
        values[column] = value
    try:
        time = None if values["time"] is None else parse_time(values["time"])
    except ValueError as exc:
        return BadRow(where, "bad_time", str(exc), _id(row))
    split = row.get("split")
    return Candidate(
        where=where,
        post_id=str(values["post_id"]).strip(),
        user_id=str(values["user_id"]).strip(),
        image=str(values["image"]).strip(),
        text=str(values["text"]),
        time=time,
        split=str(split).strip() if split not in (None, "") else None,
    )


def _id(row: dict) -> str | None:
    value = row.get("post_id")
    return None if value in (None, "") else str(value)


def _csv_rows(path: Path) -> Iterator[tuple[str, dict | BadRow]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            where = f"{path.name}:{reader.line_num}"
            if None in row:  # more cells than the header names
                yield where, BadRow(where, "wrong_column_count", f"{len(reader.fieldnames or []) + len(row[None])} cells, header has {len(reader.fieldnames or [])}", row.get("post_id"))
            else:
                yield where, row


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict | BadRow]]:
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            where = f"{path.name}:{lineno}"
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield where, BadRow(where, "malformed_json", f"{exc.msg} at column {exc.colno}")
                continue
            if not isinstance(row, dict):
                yield where, BadRow(where, "malformed_json", f"expected an object, got {type(row).__name__}")
                continue
            yield where, row


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict | BadRow]]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches():
        for row in batch.to_pylist():
            number += 1
            yield f"{path.name}:row {number}", row
