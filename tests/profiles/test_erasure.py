"""Erasing a user on SQLite and PostgreSQL: the store ends equal to a rebuild from scratch without them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from profile_samples import batches

from profiles import InvalidId, Keyword, Post, analyze
from profiles.store import Erasure, ProfileStore

store_examples = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
users = st.sampled_from(["u0", "u1", "u2", "u3", "u4", "never-posted"])  # the users of profile_samples.posts


def kept(stream: list[Post]) -> list[Post]:
    """The posts a store holds after folding ``stream``: the first of each post_id."""
    first: dict[str, Post] = {}
    for post in stream:
        first.setdefault(post.post_id, post)
    return list(first.values())


@store_examples
@given(before=batches, forgotten=users, after=batches)
def test_forgetting_equals_a_rebuild_without_the_user(
    store: ProfileStore,
    clear_store: Callable[[], None],
    snapshot: Callable[[], dict],
    before: list[list[Post]],
    forgotten: str,
    after: list[list[Post]],
) -> None:
    """Fold, forget, fold more (the user may come back, old post ids may replay): equal to folding what is left."""
    clear_store()
    for batch in before:
        store.add_posts(batch)
    held = kept([post for batch in before for post in batch])
    erased = store.forget_user(forgotten)
    theirs = [post for post in held if post.user_id == forgotten]
    assert erased.posts == len(theirs)
    assert erased.terms == len({term for post in theirs for term in analyze(post.text)})
    for batch in after:
        store.add_posts(batch)
    live = snapshot()

    clear_store()
    store.add_posts([post for post in held if post.user_id != forgotten] + [post for batch in after for post in batch])
    assert live == snapshot()


@store_examples
@given(stream=batches, forgotten=users)
def test_forgetting_twice_changes_nothing_the_second_time(
    store: ProfileStore,
    clear_store: Callable[[], None],
    snapshot: Callable[[], dict],
    stream: list[list[Post]],
    forgotten: str,
) -> None:
    clear_store()
    for batch in stream:
        store.add_posts(batch)
    store.forget_user(forgotten)
    after_first = snapshot()
    assert store.forget_user(forgotten) == Erasure(0, 0)
    assert snapshot() == after_first


def test_forgotten_user_gets_a_fresh_profile_and_others_are_rescored(store: ProfileStore) -> None:
    store.add_posts([Post("p1", "u1", "dog cat cat"), Post("p2", "u1", "bird"), Post("p3", "u2", "dog")])
    assert store.forget_user("u1") == Erasure(posts=2, terms=3)
    assert store.stats().users == 1 and store.stats().posts == 1 and store.stats().terms == 1
    assert store.top_keywords(["u1", "u2"], 5) == {"u1": [], "u2": [Keyword("dog", 1.0)]}  # N = df = 1: idf 1

    store.add_posts([Post("p4", "u1", "snow")])
    assert [k.term for k in store.top_keywords(["u1"], 5)["u1"]] == ["snow"]
    assert store.add_posts([Post("p1", "u1", "dog cat cat")]) == 1  # an old post id folds again: it was erased


def test_forget_refuses_a_bad_id_before_touching_anything(store: ProfileStore, snapshot: Callable[[], dict]) -> None:
    store.add_posts([Post("p1", "u1", "kept")])
    before = snapshot()
    for bad in ("", " ", "x" * 1000, "nul\x00"):
        with pytest.raises(InvalidId, match="user_id"):
            store.forget_user(bad)
    assert snapshot() == before
