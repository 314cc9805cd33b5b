"""The records the profile store takes in and gives back, and the checks on them.

Validation lives here, apart from the store, so the worker, the JSONL import and
the trainer reject the same bad posts with the same messages before anything
touches a database.
"""

from __future__ import annotations

from dataclasses import dataclass

from profiles.errors import ProfilesError
from profiles.ids import InvalidId, check_id, is_utf8

MAX_TEXT_CHARS = 10_000
"""Longest post text accepted. Social captions are far shorter (Instagram caps them
at 2,200 characters); anything near a megabyte is a bug or an attack, not a post."""


class InvalidPost(ProfilesError):
    """A post the store refuses; the message names the field at fault."""


@dataclass(frozen=True)
class Post:
    """One user post: the unit folded into that user's TF-IDF profile."""

    post_id: str
    user_id: str
    text: str


@dataclass(frozen=True)
class Keyword:
    """A profile term with its TF-IDF score (higher means more characteristic)."""

    term: str
    score: float


def validate_post(post: Post) -> None:
    """Raise InvalidPost unless the post has both ids and a non-empty, UTF-8, bounded text."""
    try:
        check_id(post.post_id, "post_id")
        check_id(post.user_id, "user_id")
    except InvalidId as exc:
        raise InvalidPost(str(exc)) from None
    text = post.text
    if not isinstance(text, str):
        raise InvalidPost(f"text of post {post.post_id!r} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidPost(f"text of post {post.post_id!r} is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidPost(
            f"text of post {post.post_id!r} is {len(text)} characters long; the limit is {MAX_TEXT_CHARS}"
        )
    if not is_utf8(text):
        raise InvalidPost(f"text of post {post.post_id!r} is not valid UTF-8")
