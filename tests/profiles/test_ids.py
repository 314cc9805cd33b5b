"""One owner for the id rules: the store, its columns and the worker's event schema agree."""

from __future__ import annotations

import pytest

from profiles import MAX_ID_CHARS, InvalidId, InvalidPost, Post, check_id
from profiles.schema import FoldedPost, ProfileUser
from profiles.store import ProfileStore


def test_a_good_id_comes_back_unchanged() -> None:
    assert check_id("user-7 ☀", "user_id") == "user-7 ☀"
    assert check_id("p" * MAX_ID_CHARS, "post_id") == "p" * MAX_ID_CHARS


@pytest.mark.parametrize(
    "value",
    ["", "   ", None, 7, "p" * (MAX_ID_CHARS + 1), "p\x00", "p\n", "p\x1b[2J", "p\udcff"],
)
def test_bad_ids_are_refused_naming_the_field(value: object) -> None:
    with pytest.raises(InvalidId, match="post_id"):
        check_id(value, "post_id")


def test_the_limit_is_the_width_of_the_id_columns() -> None:
    assert FoldedPost.__table__.c.post_id.type.length == MAX_ID_CHARS
    assert ProfileUser.__table__.c.user_id.type.length == MAX_ID_CHARS


def test_the_store_refuses_what_check_id_refuses(tmp_path) -> None:
    with ProfileStore(f"sqlite:///{tmp_path / 'p.db'}") as store:
        with pytest.raises(InvalidPost, match=f"post_id is {MAX_ID_CHARS + 1} characters long"):
            store.add_posts([Post("p" * (MAX_ID_CHARS + 1), "u1", "hello")])
        with pytest.raises(InvalidPost, match="control characters"):
            store.add_posts([Post("p\x01", "u1", "hello")])
        assert store.stats().posts == 0
