import json

import pytest

from profiles import MAX_ID_CHARS, MAX_TEXT_CHARS
from worker.events import forget_event, post_event
from worker.schemas import CaptionEvent, CaptionOut, EventError, ForgetEvent, UnknownSchemaError, parse_event


def event(**changes) -> bytes:
    document = json.loads(post_event("p1", "u1", image_url="https://example.com/a.png", text="sunny day"))
    document.update(changes)
    return json.dumps(document).encode()


def test_valid_event_parses():
    parsed = parse_event(event(num_captions=2))
    assert (parsed.post_id, parsed.user_id, parsed.text, parsed.num_captions) == ("p1", "u1", "sunny day", 2)
    assert parsed.image.url == "https://example.com/a.png"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"\xff\xfe{", "not_utf8"),
        (b"{not json", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'"a string"', "not_object"),
        (event(schema="uapt.post/2"), "unknown_schema"),
        (event(schema=None), "unknown_schema"),
        (event(post_id=7), "invalid_field"),
        (event(user_id=""), "invalid_field"),
        (event(image={"url": "https://x", "b64": "AAAA"}), "invalid_field"),
        (event(image={}), "invalid_field"),
        (event(num_captions=0), "invalid_field"),
        (event(text="x" * (MAX_TEXT_CHARS + 1)), "invalid_text"),
        (event(post_id="p" * (MAX_ID_CHARS + 1)), "invalid_field"),
        (event(post_id="p\x00"), "invalid_field"),
        (event(user_id="u\n1"), "invalid_field"),
        (event(user_id="   "), "invalid_field"),
    ],
)
def test_bad_events_are_refused_with_a_reason(raw, reason):
    with pytest.raises(EventError) as caught:
        parse_event(raw)
    assert caught.value.reason == reason
    assert str(caught.value)


def test_unknown_version_is_its_own_class():
    with pytest.raises(UnknownSchemaError, match="uapt.post/9"):
        parse_event(event(schema="uapt.post/9"))


def test_missing_id_names_the_field():
    document = json.loads(event())
    del document["user_id"]
    with pytest.raises(EventError, match="user_id"):
        parse_event(json.dumps(document).encode())


def test_caption_event_uses_schema_alias():
    out = CaptionEvent(post_id="p", user_id="u", captions=[CaptionOut(text="hi", score=-1.0)], keywords=[], model="m", latency_ms=1.0)
    assert json.loads(out.to_bytes())["schema"] == "uapt.caption/1"


def test_ids_follow_the_store_rules():
    """The store's id rules are the schema's: a bad id is a bad event, before any text check."""
    assert parse_event(event(post_id="p" * MAX_ID_CHARS)).post_id == "p" * MAX_ID_CHARS
    for bad in ({"post_id": "p" * (MAX_ID_CHARS + 1)}, {"post_id": "p\x07"}):
        for text in ("", "words the store would fold"):
            with pytest.raises(EventError, match="post_id") as caught:
                parse_event(event(text=text, **bad))
            assert caught.value.reason == "invalid_field"


def test_forget_event_parses_and_ignores_extra_fields():
    parsed = parse_event(forget_event("u1"))
    assert isinstance(parsed, ForgetEvent) and parsed.user_id == "u1"
    extra = json.dumps({"schema": "uapt.forget/1", "user_id": "u1", "ticket": "GDPR-42"}).encode()
    assert parse_event(extra) == parsed


@pytest.mark.parametrize(
    "document",
    [
        {"schema": "uapt.forget/1"},
        {"schema": "uapt.forget/1", "user_id": ""},
        {"schema": "uapt.forget/1", "user_id": 7},
        {"schema": "uapt.forget/1", "user_id": "u\x00"},
    ],
)
def test_bad_forget_events_are_refused_with_their_own_reason(document):
    with pytest.raises(EventError, match="user_id") as caught:
        parse_event(json.dumps(document).encode())
    assert caught.value.reason == "invalid_forget"


def test_unknown_version_names_both_schemas():
    with pytest.raises(UnknownSchemaError, match="uapt.post/1.*uapt.forget/1"):
        parse_event(json.dumps({"schema": "uapt.forget/2", "user_id": "u1"}).encode())
