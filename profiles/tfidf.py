"""The profile score and an in-memory profile set (the trainer's twin of the store).

score(u, t) = tf(u, t) × (ln((1 + N) / (1 + df(t))) + 1), where N is the number of
users with posts and df(t) the number of users who used t. This is scikit-learn's
``TfidfVectorizer(norm=None, smooth_idf=True)`` fit on one document per user.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Mapping

from profiles.analyzer import analyze
from profiles.posts import Keyword, Post, validate_post


def smooth_idf(n_users: int, df: int) -> float:
    """scikit-learn's smoothed idf: ln((1 + N) / (1 + df)) + 1."""
    return math.log((1.0 + n_users) / (1.0 + df)) + 1.0


def rank_keywords(scored: Iterable[tuple[str, float]], k: int) -> list[Keyword]:
    """The k best (term, score) pairs: highest score first, ties broken by term (as the store's SQL does)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    best = heapq.nsmallest(k, scored, key=lambda pair: (-pair[1], pair[0]))
    return [Keyword(term, score) for term, score in best]


class TfidfProfiles:
    """Profiles of a fixed corpus held in memory, with cheap leave-one-out reads.

    The trainer builds one from its training posts and asks, for each sample,
    for the user's keywords *without* that sample's own post
    (``exclude_post_id``), so a caption never sees its own words. Excluding a
    post costs O(terms of the user + terms of the post), not a refit.
    """

    def __init__(self, posts: Iterable[Post] = ()) -> None:
        self._tf: dict[str, Counter[str]] = {}  # user_id -> term -> count
        self._df: Counter[str] = Counter()  # term -> users who used it
        self._user_posts: Counter[str] = Counter()  # user_id -> folded posts
        self._posts: dict[str, tuple[str, Counter[str]]] = {}  # post_id -> (user_id, its term counts)
        for post in posts:
            self.add(post)

    @property
    def n_users(self) -> int:
        return len(self._tf)

    def add(self, post: Post) -> None:
        """Fold one post into its user's profile; a post_id seen before changes nothing."""
        validate_post(post)
        if post.post_id in self._posts:
            return
        counts = Counter(analyze(post.text))
        self._posts[post.post_id] = (post.user_id, counts)
        self._user_posts[post.user_id] += 1
        user_tf = self._tf.setdefault(post.user_id, Counter())
        for term, count in counts.items():
            if term not in user_tf:
                self._df[term] += 1
            user_tf[term] += count

    def top_keywords(self, user_id: str, k: int, exclude_post_id: str | None = None) -> list[Keyword]:
        """The user's k best keywords, as if post ``exclude_post_id`` had never been added.

        An unknown user, or one whose only post is excluded, gets []. An unknown
        ``exclude_post_id`` excludes nothing. Excluding another user's post is
        exact too: it can lower df of that post's terms and N.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        tf: Mapping[str, int] = self._tf.get(user_id, {})
        n_users = self.n_users
        df_change: dict[str, int] = {}
        if exclude_post_id is not None and exclude_post_id in self._posts:
            owner, removed = self._posts[exclude_post_id]
            owner_tf = self._tf[owner]
            if self._user_posts[owner] == 1:
                n_users -= 1
            df_change = {term: -1 for term, count in removed.items() if owner_tf[term] == count}
            if owner == user_id:
                tf = owner_tf - removed  # Counter subtraction drops terms that reach 0
        scored = (
            (term, count * smooth_idf(n_users, self._df[term] + df_change.get(term, 0))) for term, count in tf.items()
        )
        return rank_keywords(scored, k)
