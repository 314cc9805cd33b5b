"""User profiles for UAPT: each user's posts as one TF-IDF document, kept up to date incrementally.

The store lives in `profiles.store` (SQLAlchemy); this package imports only the
light parts, so that importing it for ``uapt --help`` stays cheap.
"""

from __future__ import annotations

from profiles.analyzer import analyze
from profiles.ids import MAX_ID_CHARS, InvalidId, check_id
from profiles.posts import MAX_TEXT_CHARS, InvalidPost, Keyword, Post, validate_post
from profiles.tfidf import TfidfProfiles

__all__ = [
    "MAX_ID_CHARS",
    "MAX_TEXT_CHARS",
    "InvalidId",
    "InvalidPost",
    "Keyword",
    "Post",
    "TfidfProfiles",
    "analyze",
    "check_id",
    "validate_post",
]

