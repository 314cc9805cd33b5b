"""User profiles for UAPT: each user's posts as one TF-IDF document, kept up to date incrementally.

The store (SQLAlchemy) is loaded on first use so that importing this package for
``uapt --help`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from profiles.analyzer import analyze
from profiles.ids import MAX_ID_CHARS, InvalidId, check_id
from profiles.posts import MAX_TEXT_CHARS, InvalidPost, Keyword, Post, validate_post
from profiles.tfidf import TfidfProfiles

if TYPE_CHECKING:
    from profiles.store import ProfileStore, StoreStats

__all__ = [
    "MAX_ID_CHARS",
    "MAX_TEXT_CHARS",
    "InvalidId",
    "InvalidPost",
    "Keyword",
    "Post",
    "ProfileStore",
    "StoreStats",
    "TfidfProfiles",
    "analyze",
    "check_id",
    "validate_post",
]


def __getattr__(name: str):
    if name in ("ProfileStore", "StoreStats"):
        from profiles import store

        return getattr(store, name)
    raise AttributeError(f"module 'profiles' has no attribute {name!r}")
