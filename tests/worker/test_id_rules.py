"""One set of id rules (profiles/ids.py): the event schema and the profile store accept and refuse the same ids."""

import pytest
from worker_samples import FakeCaptioner, png_bytes

from profiles import InvalidId, InvalidPost, Post, check_id
from worker.events import post_event
from worker.images import ImageLoader
from worker.processing import InputRecord, Processor
from worker.settings import ImagePolicy

BAD_IDS = ["x" * 256, "a\x00b", "   ", "\t", "line\nbreak", "\x7f", ""]


def dead_letter_reason(store, post_id: str, user_id: str = "u") -> str | None:
    """The reason the worker refuses a post with text under these ids, or None when it captions it."""
    record = InputRecord("posts", 0, 0, post_event(post_id, user_id, image_bytes=png_bytes(), text="some words"))
    result = Processor(FakeCaptioner(), store, ImageLoader(ImagePolicy())).process_batch([record])
    assert len(result.outputs) + sum(result.failures.values()) == 1
    return next(iter(result.failures), None)


@pytest.mark.parametrize("bad", BAD_IDS)
def test_the_schema_and_the_store_refuse_the_same_ids(store, bad):
    with pytest.raises(InvalidId):
        check_id(bad, "post_id")
    assert dead_letter_reason(store, bad) == "invalid_field"  # refused as a bad id, not as bad text
    assert dead_letter_reason(store, "p", user_id=bad) == "invalid_field"
    with pytest.raises(InvalidPost):
        store.add_posts([Post(bad, "u", "some words")])
    with pytest.raises(InvalidPost):
        store.add_posts([Post("p", bad, "some words")])


@pytest.mark.parametrize("good", ["x" * 255, "ünïcode-ɪᴅ", " padded "])
def test_the_schema_and_the_store_accept_the_same_ids(store, good):
    assert dead_letter_reason(store, good) is None
    assert store.add_posts([Post(good, good, "some words")]) == 1
