"""Text → terms, the way scikit-learn's ``TfidfVectorizer`` defaults do it.

``analyze(text)`` equals ``TfidfVectorizer(stop_words=sorted(STOP_WORDS)).build_analyzer()``
for every term of at most ``MAX_TERM_CHARS`` characters: the text is lower-cased
(``str.lower``, no accent stripping), tokens are ``TOKEN_PATTERN`` matches
(runs of two or more Unicode word characters), stop words are dropped.

Policy, and why:

* Stop words: scikit-learn's ``ENGLISH_STOP_WORDS`` plus the URL scaffolding
  ``http``, ``https``, ``www``, ``com``. Profiles feed the context encoder a handful of
  keywords; with stop words kept, "the" and "and" would win most users' top-k on
  raw term frequency alone.
* Hashtags: ``#`` is not a word character, so ``#Sunset`` counts as ``sunset``.
  A hashtag is the user telling us a keyword; it should add to the same term as
  the plain word.
* @mentions: ``@anna_k`` becomes ``anna_k`` (``_`` is a word character). Whom a
  user talks to is part of their context, so the handle stays.
* Emoji and other symbols are not word characters and are dropped, as in
  scikit-learn; the context encoder reads words.
* URLs split into their word runs (``example``, ``sunset_pics``); the scheme,
  ``www`` and ``com`` are stop words. Domains and path words often name the topic.
* Numbers of two or more digits stay (``2024``, ``365``): years and counts are
  meaningful in captions. Single characters never match the token pattern.
* Tokens longer than ``MAX_TERM_CHARS`` are dropped: they are base64 blobs or
  mashed-up URLs, not words, and they would not fit the store's term column.
"""

from __future__ import annotations

import re
from functools import cache

TOKEN_PATTERN = r"(?u)\b\w\w+\b"
"""scikit-learn's default ``token_pattern``."""

MAX_TERM_CHARS = 64

URL_STOP_WORDS = frozenset({"http", "https", "www", "com"})

_TOKEN_RE = re.compile(TOKEN_PATTERN)


@cache
def stop_words() -> frozenset[str]:
    """scikit-learn's English stop words plus URL scaffolding; loaded on first use (sklearn imports slowly)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | URL_STOP_WORDS


def analyze(text: str) -> list[str]:
    """The terms of ``text`` in order of appearance, repeats kept (TF counts them)."""
    excluded = stop_words()
    return [
        token for token in _TOKEN_RE.findall(text.lower()) if token not in excluded and len(token) <= MAX_TERM_CHARS
    ]
