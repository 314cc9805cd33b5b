"""What every importer yields: a candidate post, or a row refused with a reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone


@dataclass(frozen=True)
class Candidate:
    """One input row as a post, not yet checked; `where` names the row (file:line) in reports."""

    where: str
    post_id: str
    user_id: str
    image: str  # a path (relative to the input's folder, or absolute) or an http(s) URL
    text: str
    time: float | None = None  # seconds since the epoch; orders a user's posts for the split
    split: str | None = None  # given by the input; None: `build` assigns one
    extra: dict | None = None  # kept in posts.jsonl beside the required fields (e.g. source_split)


@dataclass(frozen=True)
class BadRow:
    """A row that is not imported, and why; `reason` is a short label the summary counts by."""

    where: str
    reason: str
    detail: str
    post_id: str | None = None


def parse_time(value: object) -> float:
    """Seconds since the epoch from a number or an ISO 8601 string (naive times read as UTC).

    Raises ValueError naming the value when it is neither.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"time {value!r} is not a number or an ISO 8601 date")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"time {text!r} is not a number or an ISO 8601 date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def is_url(image: str) -> bool:
    """Whether an image reference is a URL to fetch (any scheme: the guards refuse all but http(s))."""
    return "://" in image
