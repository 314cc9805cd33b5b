"""The rules for a post_id or user_id, wherever one enters: event schema, profile store, JSONL import.

One owner, so an id the worker's schema accepts is always one the store can key
on, and a bad id is refused at the edge as a bad event rather than later.
"""

from __future__ import annotations

from profiles.errors import ProfilesError

MAX_ID_CHARS = 255
"""Longest post_id / user_id accepted; matches the id columns of the store."""


class InvalidId(ProfilesError, ValueError):
    """An id that breaks the rules; the message names the field (a ValueError too, so pydantic reports it)."""


def check_id(value: object, name: str) -> str:
    """Return ``value`` if it is a usable id, else raise InvalidId naming ``name``."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidId(f"{name} must be a non-empty string, got {value!r}")
    if len(value) > MAX_ID_CHARS:
        raise InvalidId(f"{name} is {len(value)} characters long; the limit is {MAX_ID_CHARS}")
    if not is_utf8(value):
        raise InvalidId(f"{name} {value!r} is not valid UTF-8")
    if not value.isprintable():  # NUL and other control characters break keys and logs (PostgreSQL refuses NUL)
        raise InvalidId(f"{name} {value!r} contains control characters")
    return value


def is_utf8(value: str) -> bool:
    """False for strings UTF-8 cannot encode: lone surrogates, e.g. bytes decoded with surrogateescape."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
