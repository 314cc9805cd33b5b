"""The YFCC100M metadata file itself (``yfcc100m_dataset``): one tab-separated line per photo or video.

Column order, as documented for the Webscope release (23 columns; the column list of the
Hugging Face copy ``mehdidc/yfcc15m`` matches it): photo id, user NSID, user nickname,
date taken, date uploaded, capture device, title, description, user tags, machine tags,
longitude, latitude, accuracy, page URL, download URL, license name, license URL, server id,
farm id, secret, original secret, original extension, marker (0 photo, 1 video). The
Multimedia Commons copy on S3 prepends a line number and a photo hash (25 columns; see
lbsn.vgiscience.org/tutorial/yfcc-introduction). Both are read; the count of cells says which.
Text fields are URL-encoded ("Mongolian+plate"), so they are decoded here.

The caption is chosen as Park et al. 2017 chose it for their YFCC100M split
(`caption_text`): the title when it has 3 to 20 words, else the description when it
has, else the title.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote_plus

from model.data.importers.rows import BadRow, Candidate, parse_time

COLUMNS = (
    "photo_id", "user_nsid", "user_nickname", "date_taken", "date_uploaded", "capture_device", "title",
    "description", "user_tags", "machine_tags", "longitude", "latitude", "accuracy", "page_url",
    "download_url", "license_name", "license_url", "server_id", "farm_id", "secret", "secret_original",
    "extension_original", "marker",
)
PREFIXED_COLUMNS = ("line_number", "photo_id", "photo_hash") + COLUMNS[1:]  # the Multimedia Commons copy
_TAG = re.compile(r"<[^>]*>")
_URL = re.compile(r"(?i)\b(?:https?://|www\.)\S+")


def clean_text(field: str) -> str:
    """A URL-encoded YFCC100M text field as plain text: decoded, without HTML tags or links."""
    text = html.unescape(unquote_plus(field))
    text = _URL.sub(" ", _TAG.sub(" ", text))
    return " ".join(text.split())


def caption_text(title: str, description: str) -> str:
    """Park et al.'s choice: a title of 3-20 words, else a description of 3-20 words, else the title."""
    for candidate in (title, description):
        if 3 <= len(candidate.split()) <= 20:
            return candidate
    return title


def read_yfcc100m(path: Path) -> Iterator[Candidate | BadRow]:
    """Every line as a candidate post (photos only) or a bad row with its reason."""
    with open(path, encoding="utf-8", newline="\n") as handle:
        for lineno, line in enumerate(handle, start=1):
            where = f"{path.name}:{lineno}"
            cells = line.rstrip("\r\n").split("\t")
            if len(cells) == len(COLUMNS):
                row = dict(zip(COLUMNS, cells))
            elif len(cells) == len(PREFIXED_COLUMNS):
                row = dict(zip(PREFIXED_COLUMNS, cells))
            else:
                yield BadRow(where, "wrong_column_count", f"{len(cells)} tab-separated cells, expected {len(COLUMNS)} or {len(PREFIXED_COLUMNS)}")
                continue
            yield _candidate(where, row)


def _candidate(where: str, row: dict[str, str]) -> Candidate | BadRow:
    post_id = row["photo_id"].strip() or None
    if row["marker"].strip() == "1":
        return BadRow(where, "video", "the marker says this line is a video", post_id)
    for column in ("photo_id", "user_nsid", "download_url"):
        if not row[column].strip():
            return BadRow(where, "missing_field", f"column '{column}' is empty", post_id)
    try:
        time = parse_time(row["date_taken"])
    except ValueError as exc:
        return BadRow(where, "bad_time", f"date taken: {exc}", post_id)
    text = caption_text(clean_text(row["title"]), clean_text(row["description"]))
    if not text:
        return BadRow(where, "empty_text", "title and description are empty", post_id)
    return Candidate(
        where=where,
        post_id=row["photo_id"].strip(),
        user_id=row["user_nsid"].strip(),
        image=row["download_url"].strip(),
        text=text,
        time=time,
        extra={"tags": [unquote_plus(tag) for tag in row["user_tags"].split(",") if tag.strip()]},
    )
