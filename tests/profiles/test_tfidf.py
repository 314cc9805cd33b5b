"""TfidfProfiles (the trainer's in-memory profiles) against scikit-learn, including leave-one-out."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from profile_samples import as_scores, assert_ranked, assert_scores_close, batches, reference_scores

from profiles import Keyword, Post, TfidfProfiles

ALL = 10**6  # k large enough to return every term


def flatten(stream: list[list[Post]]) -> list[Post]:
    return [post for batch in stream for post in batch]


@settings(max_examples=60, deadline=None)
@given(batches)
def test_matches_sklearn(stream: list[list[Post]]) -> None:
    posts = flatten(stream)
    profiles = TfidfProfiles(posts)
    expected = reference_scores(posts)
    found = {user: profiles.top_keywords(user, ALL) for user in expected}
    for keywords in found.values():
        assert_ranked(keywords)
    assert_scores_close(as_scores(found), expected)


@settings(max_examples=60, deadline=None)
@given(batches, st.data())
def test_leave_one_out_equals_fit_without_the_post(stream: list[list[Post]], data: st.DataObject) -> None:
    posts = flatten(stream)
    profiles = TfidfProfiles(posts)
    kept = {}
    for post in posts:
        kept.setdefault(post.post_id, post)
    excluded = data.draw(st.sampled_from(sorted(kept)))
    without = [post for post in kept.values() if post.post_id != excluded]
    expected = reference_scores(without)
    for user in {post.user_id for post in posts}:
        keywords = profiles.top_keywords(user, ALL, exclude_post_id=excluded)
        assert_ranked(keywords)
        assert_scores_close({user: {k.term: k.score for k in keywords}}, {user: expected.get(user, {})})


def test_top_k_truncates_the_ranking() -> None:
    profiles = TfidfProfiles([Post("p1", "u1", "dog dog dog cat cat bird"), Post("p2", "u2", "dog")])
    full = profiles.top_keywords("u1", ALL)
    assert [k.term for k in full] == ["dog", "cat", "bird"]  # 3 × 1.0 > 2 × 1.405 > 1 × 1.405
    assert profiles.top_keywords("u1", 2) == full[:2]


def test_unknown_user_and_only_post_excluded_give_nothing() -> None:
    profiles = TfidfProfiles([Post("p1", "u1", "sunset beach")])
    assert profiles.top_keywords("nobody", 5) == []
    assert profiles.top_keywords("u1", 5, exclude_post_id="p1") == []
    assert profiles.top_keywords("u1", 5, exclude_post_id="unknown") == [
        Keyword("beach", 1.0),
        Keyword("sunset", 1.0),
    ]


def test_replayed_post_counts_once() -> None:
    profiles = TfidfProfiles([Post("p1", "u1", "sunset")])
    profiles.add(Post("p1", "u1", "sunset sunset"))
    assert profiles.top_keywords("u1", 5) == [Keyword("sunset", 1.0)]
