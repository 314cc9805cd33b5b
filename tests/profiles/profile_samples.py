"""Shared test data for the profile tests: hypothesis strategies and the scikit-learn reference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from profiles import Keyword, Post
from profiles.analyzer import stop_words

Scores = dict[str, dict[str, float]]  # user_id -> term -> score
PROFILE_TABLES = ("profile_users", "profile_posts", "profile_user_terms", "profile_terms", "profile_corpus")

# Words chosen to hit the analyzer's policy: stop words, hashtags, mentions, emoji,
# numbers, accents and case, single letters, URL pieces, a shared core vocabulary.
WORDS = (
    "sunset beach #beach Beach dog dogs coffee café CAFÉ 2024 7 the and a x @anna_k 🌅 🐶🐶 "
    "https://www.example.com/sunset_pics naïve straße ramen hike hike! mountain-view 42nd snow __ ok"
).split()

texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join)
posts = st.builds(
    Post,
    post_id=st.sampled_from([f"p{i}" for i in range(16)]),  # few ids: replays and in-batch duplicates happen
    user_id=st.sampled_from([f"u{i}" for i in range(5)]),
    text=texts,
)
batches = st.lists(st.lists(posts, min_size=1, max_size=6), min_size=1, max_size=5)


def user_documents(stream: Sequence[Post]) -> dict[str, str]:
    """One document per user from the first post of each post_id (what the store keeps)."""
    seen: set[str] = set()
    documents: dict[str, list[str]] = {}
    for post in stream:
        if post.post_id not in seen:
            seen.add(post.post_id)
            documents.setdefault(post.user_id, []).append(post.text)
    return {user: " ".join(parts) for user, parts in documents.items()}


def sklearn_scores(documents: Mapping[str, str]) -> Scores:
    """Reference: TfidfVectorizer(norm=None, smooth_idf=True) fit on one document per user."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    users = list(documents)
    vectorizer = TfidfVectorizer(norm=None, smooth_idf=True, stop_words=sorted(stop_words()))
    try:
        matrix = vectorizer.fit_transform([documents[user] for user in users]).tocsr()
    except ValueError:  # scikit-learn refuses a corpus without any term: every profile is empty
        return {user: {} for user in users}
    terms = vectorizer.get_feature_names_out()
    return {
        user: {
            str(terms[column]): float(value)
            for column, value in zip(matrix[row].indices, matrix[row].data, strict=True)
        }
        for row, user in enumerate(users)
    }


def reference_scores(stream: Sequence[Post]) -> Scores:
    """scikit-learn's scores for a stream of posts, replays of a post_id ignored."""
    return sklearn_scores(user_documents(stream))


def as_scores(keywords: Mapping[str, Sequence[Keyword]]) -> Scores:
    return {user: {keyword.term: keyword.score for keyword in found} for user, found in keywords.items()}


def assert_ranked(keywords: Sequence[Keyword]) -> None:
    """Best first, ties by term: the order both the store and TfidfProfiles promise."""
    assert [(-k.score, k.term) for k in keywords] == sorted((-k.score, k.term) for k in keywords)


def assert_scores_close(actual: Scores, expected: Scores, tolerance: float = 1e-9) -> None:
    assert actual.keys() == expected.keys()
    for user, terms in expected.items():
        assert actual[user].keys() == terms.keys(), user
        for term, score in terms.items():
            assert abs(actual[user][term] - score) <= tolerance, (user, term, actual[user][term], score)


def dump_store(url: str) -> dict[str, list[tuple]]:
    """Every row of every profile table, sorted: equal dumps mean equal stores."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                table: sorted(tuple(row) for row in connection.execute(text(f"SELECT * FROM {table}")))
                for table in PROFILE_TABLES
            }
    finally:
        engine.dispose()
