"""The one way a user's keyword list becomes the text the context encoder reads.

Training (`model.data.samples`) and serving (`model.captioner`) must agree on it
exactly, or the model would see other context at inference than in training.
"""

from __future__ import annotations

from collections.abc import Sequence


def keywords_to_text(keywords: Sequence[str]) -> str:
    """A user's keyword list as one text: the words, space-separated."""
    return " ".join(word.strip() for word in keywords if word.strip())
