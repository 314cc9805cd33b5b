"""Erasing a user on SQLite and PostgreSQL: the store ends equal to a rebuild from scratch without them."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from profile_samples import batches, dump_store

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


@pytest.mark.integration
def test_erasing_while_another_worker_folds_equals_a_serial_run(pg_schema_url: Callable[[], str]) -> None:
    """PostgreSQL: forgets and folds of other users sharing the vocabulary, at once, lose no df or N change."""
    rng = random.Random(5)
    words = [f"word{i}" for i in range(30)]

    def posts(prefix: str, n: int) -> list[Post]:
        return [Post(f"{prefix}-{i}", f"{prefix}{i % 10}", " ".join(rng.choices(words, k=8))) for i in range(n)]

    gone, staying = posts("gone", 60), [posts(f"stay{b}-", 6) for b in range(30)]
    url = pg_schema_url()
    with ProfileStore(url) as store:
        store.add_posts(gone)
    spans: dict[str, tuple[float, float]] = {}
    errors: list[BaseException] = []

    def run(name: str, work: Callable[[ProfileStore], None]) -> None:
        try:
            with ProfileStore(url) as own:
                began = time.monotonic()
                work(own)
                spans[name] = (began, time.monotonic())
        except BaseException as error:  # an escaped deadlock is what this test looks for
            errors.append(error)

    def fold(own: ProfileStore) -> None:
        for batch in staying:
            own.add_posts(batch)

    def erase(own: ProfileStore) -> None:
        for user in sorted({post.user_id for post in gone}):
            own.forget_user(user)
            time.sleep(0.01)

    threads = [threading.Thread(target=run, args=(name, work)) for name, work in (("fold", fold), ("erase", erase))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert max(span[0] for span in spans.values()) < min(span[1] for span in spans.values()), "no overlap"

    serial = pg_schema_url()
    with ProfileStore(serial) as store:
        for batch in staying:
            store.add_posts(batch)
    assert dump_store(url) == dump_store(serial)
