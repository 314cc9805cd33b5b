"""validate_post refuses bad posts with a message naming the field."""

from __future__ import annotations

import pytest

from profiles import MAX_TEXT_CHARS, InvalidPost, Post, validate_post


@pytest.mark.parametrize(
    ("post", "field"),
    [
        (Post("p1", "u1", ""), "text"),
        (Post("p1", "u1", " \n\t"), "text"),
        (Post("p1", "u1", "x" * 1_000_000), "text"),
        (Post("p1", "u1", "broken \udcff bytes"), "text"),
        (Post("p1", "u1", b"bytes"), "text"),  # type: ignore[arg-type]
        (Post("", "u1", "hello"), "post_id"),
        (Post(None, "u1", "hello"), "post_id"),  # type: ignore[arg-type]
        (Post("p1", " ", "hello"), "user_id"),
        (Post("p1", "u" * 300, "hello"), "user_id"),
        (Post("p\x00", "u1", "hello"), "post_id"),
        (Post("p1", "u\udcff", "hello"), "user_id"),
    ],
)
def test_bad_posts_rejected(post: Post, field: str) -> None:
    with pytest.raises(InvalidPost, match=field):
        validate_post(post)


def test_limits_accepted() -> None:
    validate_post(Post("p1", "u1", "x" * MAX_TEXT_CHARS))
    validate_post(Post("p1", "u1", "🌅"))  # no terms, still a post
