"""ProfileStore on SQLite and PostgreSQL: scikit-learn equivalence, idempotence, bad input, reads."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from profile_samples import as_scores, assert_ranked, assert_scores_close, batches, reference_scores

from profiles import InvalidPost, Keyword, Post, TfidfProfiles
from profiles.store import ProfileStore

ALL = 10**6  # k large enough to return every term
store_examples = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@store_examples
@given(batches)
def test_equals_sklearn_after_every_batch(
    store: ProfileStore, clear_store: Callable[[], None], stream: list[list[Post]]
) -> None:
    clear_store()
    seen: list[Post] = []
    twin = TfidfProfiles()
    for batch in stream:
        store.add_posts(batch)
        seen.extend(batch)
        for post in batch:
            twin.add(post)
        expected = reference_scores(seen)
        found = store.top_keywords([*expected, "never-posted"], ALL)
        assert found.pop("never-posted") == []
        for user, keywords in found.items():
            assert_ranked(keywords)
            assert keywords == twin.top_keywords(user, ALL)  # same formula, same float operations
        assert_scores_close(as_scores(found), expected)
        assert store.stats().users == len(expected)


@store_examples
@given(batches, st.data())
def test_replaying_any_prefix_changes_nothing(
    store: ProfileStore,
    clear_store: Callable[[], None],
    snapshot: Callable[[], dict],
    stream: list[list[Post]],
    data: st.DataObject,
) -> None:
    clear_store()
    for batch in stream:
        store.add_posts(batch)
    before = snapshot()
    replayed = [post for batch in stream for post in batch]
    prefix = replayed[: data.draw(st.integers(1, len(replayed)))]
    assert store.add_posts(prefix) == 0
    assert snapshot() == before


def test_add_posts_counts_new_posts_once(store: ProfileStore) -> None:
    batch = [Post("p1", "u1", "sunset beach"), Post("p1", "u1", "sunset beach"), Post("p2", "u2", "beach")]
    assert store.add_posts(batch) == 2
    assert store.add_posts(batch) == 0
    assert store.add_posts([]) == 0
    assert store.stats().posts == 2
    assert store.top_keywords(["u1"], 5)["u1"][0] == Keyword("sunset", pytest.approx(1.4054651081081644))


def test_bad_post_in_a_batch_writes_nothing(store: ProfileStore, snapshot: Callable[[], dict]) -> None:
    store.add_posts([Post("p0", "u0", "already here")])
    before = snapshot()
    for bad in (
        Post("p2", "u2", ""),
        Post("p2", "u2", "x" * 1_000_000),
        Post("p2", "u2", "bad \udcff"),
        Post("", "u2", "no id"),
        Post("p2", "", "no user"),
    ):
        with pytest.raises(InvalidPost):
            store.add_posts([Post("p1", "u1", "fine words"), bad])
        assert snapshot() == before


def test_top_keywords_ranks_and_truncates(store: ProfileStore) -> None:
    store.add_posts([Post("p1", "u1", "dog dog dog cat cat bird"), Post("p2", "u2", "dog")])
    found = store.top_keywords(["u1", "u1", "ghost"], 2)
    assert list(found) == ["u1", "ghost"]
    assert [k.term for k in found["u1"]] == ["dog", "cat"]
    assert found["ghost"] == []
    assert store.top_keywords([], 3) == {}
    with pytest.raises(ValueError, match="k must be"):
        store.top_keywords(["u1"], 0)


def test_many_users_in_one_read(store: ProfileStore) -> None:
    store.add_posts([Post(f"p{i}", f"u{i}", f"word{i} shared") for i in range(1200)])
    found = store.top_keywords([f"u{i}" for i in range(1200)], 1)
    assert all(found[f"u{i}"][0].term == f"word{i}" for i in range(1200))


def test_reopen_without_create_needs_schema(store_url: str, tmp_path) -> None:
    with ProfileStore(store_url) as store:
        store.add_posts([Post("p1", "u1", "kept across opens")])
    with ProfileStore(store_url, create=False) as store:
        assert store.stats().posts == 1
    with pytest.raises(FileNotFoundError):
        ProfileStore(f"sqlite:///{tmp_path / 'missing.db'}", create=False)


class _Deadlock(Exception):
    sqlstate = "40P01"


def test_transient_conflicts_are_retried_then_surface(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import OperationalError

    from profiles import store as store_module

    monkeypatch.setattr(store_module, "RETRY_BASE_DELAY_S", 0.0)
    with ProfileStore(f"sqlite:///{tmp_path / 'p.db'}") as store:
        fold, calls = store._fold, []

        def conflicting_fold(connection, analyzed, failures: int):
            calls.append(1)
            if len(calls) <= failures:
                raise OperationalError("INSERT …", {}, _Deadlock("deadlock detected"))
            return fold(connection, analyzed)

        monkeypatch.setattr(store, "_fold", lambda c, a: conflicting_fold(c, a, failures=2))
        assert store.add_posts([Post("p1", "u1", "retried")]) == 1
        assert len(calls) == 3

        calls.clear()
        monkeypatch.setattr(store, "_fold", lambda c, a: conflicting_fold(c, a, failures=99))
        with pytest.raises(OperationalError, match="deadlock"):
            store.add_posts([Post("p2", "u1", "gives up")])
        assert len(calls) == store_module.MAX_ATTEMPTS
        assert store.stats().posts == 1
