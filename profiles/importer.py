"""Bulk import of posts from JSONL (one ``{"post_id", "user_id", "text", …}`` object per line).

Lines are checked one by one and every problem is reported with its line
number. Posts are folded in chunks, one transaction each, so a large file
neither holds one huge transaction nor leaves a chunk half-written. On a bad
line the import either skips it or stops; when it stops, every line before the
bad one has been imported and none after, and since folding is idempotent a
re-run after fixing the line just skips what is already there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from tqdm import tqdm

from profiles.errors import ProfilesError
from profiles.posts import InvalidPost, Post, validate_post
from profiles.store import ProfileStore

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 4 * 1024 * 1024
"""Longer lines are refused unparsed: no valid post is this large, and parsing them wastes memory."""

OnError = Literal["skip", "stop"]


@dataclass(frozen=True)
class LineError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ImportReport:
    lines: int = 0  # non-blank lines read
    folded: int = 0  # posts new to the store
    replayed: int = 0  # valid posts the store already had (or repeated in the file)
    errors: list[LineError] = field(default_factory=list)


class ImportStopped(ProfilesError):
    """A bad line ended an import run with ``on_error="stop"``; ``report`` says what was imported before it."""

    def __init__(self, path: Path, error: LineError, report: ImportReport) -> None:
        super().__init__(f"{path}: {error}; stopped after importing {report.folded} new posts from the lines before it")
        self.error = error
        self.report = report


def parse_post(raw: bytes) -> Post:
    """One JSONL line → a valid Post, or InvalidPost saying what is wrong with it."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidPost(f"not valid UTF-8 (byte {error.start})") from None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise InvalidPost(f"malformed JSON: {error.msg} (column {error.colno})") from None
    if not isinstance(record, dict):
        raise InvalidPost(f"expected a JSON object, got {type(record).__name__}")
    missing = [name for name in ("post_id", "user_id", "text") if name not in record]
    if missing:
        raise InvalidPost(f"missing field {', '.join(map(repr, missing))}")
    post = Post(post_id=record["post_id"], user_id=record["user_id"], text=record["text"])
    validate_post(post)
    return post


def _read_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, line or None when too long, bytes consumed) for each line; blank lines are skipped."""
    number = 0
    while raw := stream.readline(MAX_LINE_BYTES + 1):
        number += 1
        consumed = len(raw)
        if consumed > MAX_LINE_BYTES:
            while raw and not raw.endswith(b"\n"):
                raw = stream.readline(MAX_LINE_BYTES)
                consumed += len(raw)
            yield number, None, consumed
        elif raw.strip():
            yield number, raw, consumed


def import_jsonl(
    store: ProfileStore,
    path: Path,
    *,
    chunk_size: int = 1000,
    on_error: OnError = "stop",
    progress: bool = True,
) -> ImportReport:
    """Fold every post of a JSONL file into ``store``; raises ImportStopped on a bad line when on_error="stop"."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if on_error not in ("skip", "stop"):
        raise ValueError(f"on_error must be 'skip' or 'stop', got {on_error!r}")
    report = ImportReport()
    chunk: list[Post] = []

    def flush() -> None:
        folded = store.add_posts(chunk)
        report.folded += folded
        report.replayed += len(chunk) - folded
        chunk.clear()

    with (
        path.open("rb") as stream,
        tqdm(
            total=path.stat().st_size, unit="B", unit_scale=True, desc=f"import {path.name}", disable=not progress
        ) as bar,
    ):
        for number, raw, consumed in _read_lines(stream):
            bar.update(consumed)
            report.lines += 1
            try:
                if raw is None:
                    raise InvalidPost(f"line longer than {MAX_LINE_BYTES} bytes")
                chunk.append(parse_post(raw))
            except InvalidPost as problem:
                error = LineError(number, str(problem))
                report.errors.append(error)
                if on_error == "stop":
                    flush()
                    raise ImportStopped(path, error, report) from None
                logger.warning("%s: %s (skipped)", path, error)
            if len(chunk) >= chunk_size:
                flush()
        flush()
    if report.folded:
        store.refresh_statistics()
    return report
