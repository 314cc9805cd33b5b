"""The processing step without a broker: fake captioner, real SQLite profile store."""

import base64
import json

import pytest
from worker_samples import FakeCaptioner, jpeg_bytes, png_bytes

from profiles import Post
from profiles.errors import DatabaseUnavailable
from worker.events import post_event
from worker.images import ImageLoader
from worker.processing import InputRecord, Processor
from worker.settings import ImagePolicy


def record(value: bytes | None, offset: int = 0, partition: int = 0) -> InputRecord:
    return InputRecord(topic="posts", partition=partition, offset=offset, value=value, key=b"k")


def processor(captioner, store, **kwargs) -> Processor:
    return Processor(captioner, store, ImageLoader(ImagePolicy()), **kwargs)


def test_good_events_get_captions_from_one_model_call(fake_captioner, store):
    store.add_posts([Post("h1", "alice", "sunset beach sunset waves"), Post("h2", "bob", "coffee latte")])
    records = [
        record(post_event("p1", "alice", image_bytes=png_bytes((10, 0, 0)), text="new beach day"), 0),
        record(post_event("p2", "bob", image_bytes=png_bytes((0, 20, 0)), num_captions=2), 1),
        record(post_event("p3", "carol", image_bytes=png_bytes((0, 0, 30)), text="hello world"), 2),
    ]
    result = processor(fake_captioner, store, num_captions=3, top_k=2).process_batch(records)

    assert len(fake_captioner.calls) == 1 and fake_captioner.calls[0][0] == 3
    outputs = {json.loads(o.value)["post_id"]: json.loads(o.value) for o in result.outputs}
    assert set(outputs) == {"p1", "p2", "p3"}
    alice = outputs["p1"]
    assert alice["schema"] == "uapt.caption/1" and alice["user_id"] == "alice" and alice["model"] == "fake:untrained"
    assert alice["keywords"][0] == "sunset" and len(alice["keywords"]) == 2
    assert "beach" not in outputs["p2"]["keywords"]
    assert len(alice["captions"]) == 3 and len(outputs["p2"]["captions"]) == 2
    assert alice["captions"][0]["text"].startswith("rgb(10, 0, 0)")
    assert outputs["p3"]["keywords"] == [] and outputs["p3"]["captions"]  # a new user is captioned too
    assert [o.key for o in result.outputs] == [b"alice", b"bob", b"carol"]
    # Only events with text are folded, and processing itself never writes the store.
    assert [p.post_id for p in result.posts] == ["p1", "p3"]
    assert store.stats().posts == 2
    assert set(result.stage_seconds) == {"parse", "image", "encode", "profile_read", "generate"}


def test_profile_read_excludes_the_batch_own_text(fake_captioner, store):
    records = [record(post_event("p1", "dave", image_bytes=png_bytes(), text="volcano volcano"))]
    result = processor(fake_captioner, store).process_batch(records)
    assert json.loads(result.outputs[0].value)["keywords"] == []
    store.add_posts(result.posts)
    again = processor(fake_captioner, store).process_batch([record(post_event("p2", "dave", image_bytes=png_bytes()))])
    assert json.loads(again.outputs[0].value)["keywords"] == ["volcano"]


def test_bad_events_become_dead_letters_and_good_ones_survive(fake_captioner, store):
    bad_values = [b"", b"{oops", b"[]", post_event("x", "u", image_bytes=b"not an image"),
                  post_event("y", "u", image_bytes=jpeg_bytes()[:300]),
                  json.dumps({"schema": "uapt.post/1", "post_id": "z", "user_id": "u", "image": {"b64": "@@"}}).encode()]
    records = [record(v, offset=i) for i, v in enumerate(bad_values)]
    records.append(record(post_event("good", "u", image_bytes=png_bytes()), offset=len(bad_values)))
    result = processor(fake_captioner, store).process_batch(records)

    assert [json.loads(o.value)["post_id"] for o in result.outputs] == ["good"]
    assert len(result.dead_letters) == len(bad_values)
    for i, letter in enumerate(result.dead_letters):
        headers = dict(letter.headers)
        assert letter.value == bad_values[i]
        assert headers["source_offset"] == str(i).encode() and headers["source_topic"] == b"posts"
        assert headers["error"] and headers["error_class"] and headers["reason"]
    assert sum(result.failures.values()) == len(bad_values)
    assert result.failures["image_decode"] == 3


def test_all_bad_batch_skips_the_model(fake_captioner, store):
    result = processor(fake_captioner, store).process_batch([record(b"nope")])
    assert fake_captioner.calls == [] and result.outputs == [] and len(result.dead_letters) == 1


def test_num_captions_is_capped(fake_captioner, store):
    value = post_event("p", "u", image_bytes=png_bytes(), num_captions=50)
    result = processor(fake_captioner, store, max_captions=4).process_batch([record(value)])
    assert len(json.loads(result.outputs[0].value)["captions"]) == 4


def test_replayed_post_in_one_batch_is_folded_once(fake_captioner, store):
    value = post_event("p", "u", image_bytes=png_bytes(), text="twice")
    result = processor(fake_captioner, store).process_batch([record(value, 0), record(value, 1)])
    assert len(result.outputs) == 2 and len(result.posts) == 1


def test_b64_event_round_trip_keeps_pixels(fake_captioner, store):
    data = base64.b64encode(png_bytes((1, 2, 3))).decode()
    value = json.dumps({"schema": "uapt.post/1", "post_id": "p", "user_id": "u", "image": {"b64": data}}).encode()
    result = processor(fake_captioner, store).process_batch([record(value)])
    assert json.loads(result.outputs[0].value)["captions"][0]["text"].startswith("rgb(1, 2, 3)")


class PickyCaptioner(FakeCaptioner):
    """Fails on any batch holding a pure-blue image (a post that breaks the model)."""

    def caption(self, images, keywords, num_captions=3):
        if any(image.getpixel((0, 0)) == (0, 0, 255) for image in images):
            raise RuntimeError("model blew up")
        return super().caption(images, keywords, num_captions)


def test_a_post_that_breaks_the_model_is_isolated(store):
    values = [post_event("ok1", "u", image_bytes=png_bytes((1, 1, 1))), post_event("boom", "u", image_bytes=png_bytes((0, 0, 255))),
              post_event("ok2", "u", image_bytes=png_bytes((2, 2, 2)), text="fine words")]
    result = processor(PickyCaptioner(), store).process_batch([record(v, i) for i, v in enumerate(values)])
    assert [o.post_id for o in result.outputs] == ["ok1", "ok2"]
    assert [dict(d.headers)["reason"] for d in result.dead_letters] == [b"model_error"]
    assert [p.post_id for p in result.posts] == ["ok2"]


def test_a_model_error_on_a_batch_of_one_is_retried_then_dead_lettered(store):
    captioner = PickyCaptioner()
    result = processor(captioner, store, max_attempts=3).process_batch(
        [record(post_event("boom", "u", image_bytes=png_bytes((0, 0, 255))))]
    )
    assert result.outputs == [] and len(captioner.calls) == 0  # every call raised before it was recorded
    (letter,) = result.dead_letters
    headers = dict(letter.headers)
    assert headers["reason"] == b"model_error" and headers["error_class"] == b"RuntimeError"
    assert b"blew up" in headers["error"] and result.failures == {"model_error": 1}


class CountingPicky(PickyCaptioner):
    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[int] = []

    def caption(self, images, keywords, num_captions=3):
        self.attempts.append(len(images))
        return super().caption(images, keywords, num_captions)


def test_the_culprit_is_found_by_halving_and_tried_a_bounded_number_of_times(store):
    values = [post_event(f"ok{i}", "u", image_bytes=png_bytes((i + 1, 0, 0))) for i in range(8)]
    values[5] = post_event("boom", "u", image_bytes=png_bytes((0, 0, 255)))
    captioner = CountingPicky()
    result = processor(captioner, store, max_attempts=2).process_batch([record(v, i) for i, v in enumerate(values)])

    assert [o.post_id for o in result.outputs] == [f"ok{i}" for i in range(8) if i != 5]
    assert [dict(d.headers)["source_offset"] for d in result.dead_letters] == [b"5"]
    # 8 -> 4+4 -> 2+2 -> 1+1, then one more try of the culprit alone: 8 calls, not one per post per try
    assert sorted(captioner.attempts, reverse=True) == [8, 4, 4, 2, 2, 1, 1, 1]


def test_a_model_that_fails_on_everything_dead_letters_everything_and_stops_trying(store):
    values = [post_event(f"b{i}", "u", image_bytes=png_bytes((0, 0, 255))) for i in range(4)]
    captioner = CountingPicky()
    result = processor(captioner, store, max_attempts=3).process_batch([record(v, i) for i, v in enumerate(values)])
    assert result.outputs == [] and result.failures == {"model_error": 4}
    assert captioner.attempts.count(1) == 4 * 3


class FlakyKeywords:
    """A keyword source whose first read fails with an error that is not an outage."""

    def __init__(self, store) -> None:
        self.store, self.failed = store, False

    def top_keywords(self, user_ids, k):
        if not self.failed:
            self.failed = True
            raise KeyError("flaky read")
        return self.store.top_keywords(user_ids, k)


def test_a_failed_keyword_read_is_retried(fake_captioner, store):
    result = processor(fake_captioner, FlakyKeywords(store)).process_batch([record(post_event("p", "u", image_bytes=png_bytes()))])
    assert [o.post_id for o in result.outputs] == ["p"] and result.dead_letters == []


class UnreachableKeywords:
    def top_keywords(self, user_ids, k):
        raise DatabaseUnavailable("database down and the worker is stopping")


def test_a_database_outage_is_not_the_posts_fault(fake_captioner):
    with pytest.raises(DatabaseUnavailable):
        processor(fake_captioner, UnreachableKeywords()).process_batch([record(post_event("p", "u", image_bytes=png_bytes()))])


class BrokenLoader(ImageLoader):
    def load(self, ref, *, deadline=None):
        if ref.b64 and ref.b64.startswith("aGVsbG8"):  # base64 of b"hello"
            raise KeyError("a bug in a loader")
        return super().load(ref, deadline=deadline)


def test_unforeseen_errors_in_per_record_steps_are_contained(fake_captioner, store, monkeypatch):
    from worker import processing

    real_parse = processing.parse_event

    def parse(raw):
        if raw and b"parser-bug" in raw:
            raise TypeError("a bug in the parser")
        return real_parse(raw)

    monkeypatch.setattr(processing, "parse_event", parse)
    values = [
        post_event("parser-bug", "u", image_bytes=png_bytes()),
        post_event("loader-bug", "u", image_bytes=b"hello"),
        b"[" * 1000 + b"]" * 1000,
        b'{"schema": "uapt.post/1", "post_id": ' + b"9" * 5000 + b"}",
        post_event("good", "u", image_bytes=png_bytes()),
    ]
    result = Processor(fake_captioner, store, BrokenLoader(ImagePolicy())).process_batch(
        [record(v, i) for i, v in enumerate(values)]
    )
    assert [o.post_id for o in result.outputs] == ["good"]
    letters = {dict(d.headers)["source_offset"]: dict(d.headers) for d in result.dead_letters}
    assert letters[b"0"]["reason"] == b"internal_error" and letters[b"0"]["error_class"] == b"TypeError"
    assert letters[b"1"]["reason"] == b"internal_error" and letters[b"1"]["error_class"] == b"KeyError"
    assert letters[b"2"]["reason"] == b"too_deep"
    assert letters[b"3"]["reason"] == b"not_json"


class PickyEncoder(FakeCaptioner):
    """Its image encoder fails on any batch holding a pure-blue image; captioning itself never fails."""

    def __init__(self) -> None:
        super().__init__()
        self.encoded: list[int] = []

    def encode_images(self, images):
        self.encoded.append(len(images))
        if any(image.getpixel((0, 0)) == (0, 0, 255) for image in images):
            raise RuntimeError("encoder blew up")
        return super().encode_images(images)


def test_images_are_encoded_once_when_preparing_the_batch(store):
    captioner = PickyEncoder()
    values = [post_event(f"ok{i}", "u", image_bytes=png_bytes((i + 1, 0, 0))) for i in range(3)]
    prepared = processor(captioner, store).prepare([record(v, i) for i, v in enumerate(values)])
    assert captioner.encoded == [3] and captioner.calls == []  # encoded ahead, nothing generated yet
    result = processor(captioner, store).finish(prepared)
    assert captioner.encoded == [3] and [o.post_id for o in result.outputs] == ["ok0", "ok1", "ok2"]


def test_an_image_that_breaks_the_encoder_is_isolated_in_the_model_calls(store):
    values = [post_event(f"ok{i}", "u", image_bytes=png_bytes((i + 1, 0, 0))) for i in range(4)]
    values[2] = post_event("boom", "u", image_bytes=png_bytes((0, 0, 255)))
    captioner = PickyEncoder()
    result = processor(captioner, store, max_attempts=2).process_batch([record(v, i) for i, v in enumerate(values)])
    assert [o.post_id for o in result.outputs] == ["ok0", "ok1", "ok3"]
    assert [dict(d.headers)["reason"] for d in result.dead_letters] == [b"model_error"]
    # the batch once in `prepare`, then 4 -> 2+2 -> 1+1 and one more try of the culprit
    assert captioner.encoded == [4, 4, 2, 2, 1, 1, 1]
