"""A hostile corpus through the real broker to a real worker: every message lands on the caption topic or the
dead-letter topic with the expected reason, and the worker still captions a good post afterwards.

Slow image servers against the running worker are here too: it moves on within its budget.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import struct
import time
import zlib

import pytest
from PIL import Image
from worker_samples import (
    SLOW_MODES,
    bomb_png,
    captions_by_post,
    jpeg_bytes,
    png_bytes,
    publish,
    read_topic,
    running_worker,
    slow_http_server,
)

from worker.events import post_event

pytestmark = pytest.mark.integration

CAPTION = "caption"
MAX_IMAGE_BYTES = 200_000


def event(name: str, /, **fields) -> bytes:
    """A uapt.post/1 document (post_id = name) with a good b64 image unless ``fields`` say otherwise (None drops a field)."""
    document = {"schema": "uapt.post/1", "post_id": name, "user_id": "mallory", "image": {"b64": b64(png_bytes())}}
    document.update(fields)
    return json.dumps({k: v for k, v in document.items() if v is not None}).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image(post_id: str, data: bytes) -> bytes:
    return event(post_id, image={"b64": b64(data)})


def raw_event(post_id: str, fragment: str) -> bytes:
    """A post whose num_captions is a raw JSON fragment (numbers json.dumps would never write)."""
    return (
        '{"schema": "uapt.post/1", "post_id": "%s", "user_id": "mallory", "image": {"b64": "%s"}, "num_captions": %s}'
        % (post_id, b64(png_bytes()), fragment)
    ).encode()


def gif_header(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


def bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def png_with_bad_crc() -> bytes:
    data = bytearray(png_bytes())
    data[29] ^= 0xFF  # inside the IHDR CRC
    return bytes(data)


def corpus(image_root) -> list[tuple[str, bytes | None, str]]:
    """(name, message value, expected outcome: CAPTION or the dead-letter reason). Names double as post ids."""
    (image_root / "notes.txt").write_text("not an image")
    (image_root / "dir").mkdir()
    os.symlink("/etc/hostname", image_root / "escape.png")
    deep_list = "[" * 1000 + "]" * 1000
    deep_object = '{"a":' * 1000 + "1" + "}" * 1000
    json_cases = [
        ("empty", b"", "empty"),
        ("tombstone", None, "empty"),
        ("truncated", b'{"schema": "uapt.post/1", "post_id": ', "not_json"),
        ("array", b"[]", "not_object"),
        ("null", b"null", "not_object"),
        ("number", b"42", "not_object"),
        ("string", b'"uapt.post/1"', "not_object"),
        ("deep-list", deep_list.encode(), "too_deep"),
        ("deep-object", deep_object.encode(), "too_deep"),
        ("deep-in-field", event("deep-in-field", extra=None)[:-1] + b', "extra": ' + deep_list.encode() + b"}", "too_deep"),
        ("huge-int", raw_event("huge-int", "9" * 5000), "not_json"),
        ("nan", raw_event("nan", "NaN"), "invalid_field"),
        ("infinity", raw_event("infinity", "Infinity"), "invalid_field"),
        ("minus-infinity", raw_event("minus-infinity", "-Infinity"), "invalid_field"),
        ("float-overflow", raw_event("float-overflow", "1e999"), "invalid_field"),
        ("big-but-fine", raw_event("big-but-fine", str(10**30)), CAPTION),  # capped to max_captions
        ("duplicate-keys", b'{"schema": "uapt.post/1", "post_id": "x", "post_id": "", "user_id": "u", "image": {"b64": "AA=="}}', "invalid_field"),
        ("not-utf8", b'{"schema": "uapt.post/1", "post_id": "\xff\xfe"}', "not_utf8"),
        ("utf16", event("utf16").decode().encode("utf-16"), "not_utf8"),
        ("bom", b"\xef\xbb\xbf" + event("bom"), "not_json"),
        ("lone-surrogate-id", event("x").replace(b'"x"', b'"\\ud800"'), "invalid_field"),
        ("lone-surrogate-text", event("lone-surrogate-text", text="\ud800 words"), "invalid_text"),
        ("schema-v2", event("schema-v2", schema="uapt.post/2"), "unknown_schema"),
        ("schema-missing", event("schema-missing", schema=None), "unknown_schema"),
        ("schema-number", event("schema-number", schema=1), "unknown_schema"),
        ("post-id-missing", event("post-id-missing", post_id=None), "invalid_field"),
        ("post-id-number", event("post-id-number", post_id=7), "invalid_field"),
        ("post-id-empty", event("post-id-empty", post_id=""), "invalid_field"),
        ("post-id-256", event("post-id-256", post_id="x" * 256, text="words"), "invalid_field"),
        ("post-id-nul", event("post-id-nul", post_id="a\x00b"), "invalid_field"),
        ("user-id-blank", event("user-id-blank", user_id="   "), "invalid_field"),
        ("user-id-list", event("user-id-list", user_id=["a"]), "invalid_field"),
        ("user-id-object", event("user-id-object", user_id={"$ne": ""}), "invalid_field"),
        ("image-missing", event("image-missing", image=None), "invalid_field"),
        ("image-two-sources", event("image-two-sources", image={"b64": "AA==", "url": "http://example.com/a.png"}), "invalid_field"),
        ("image-empty", event("image-empty", image={}), "invalid_field"),
        ("image-string", event("image-string", image="http://example.com/a.png"), "invalid_field"),
        ("image-extra-key", event("image-extra-key", image={"b64": "AA==", "exec": "rm -rf /"}), "invalid_field"),
        ("text-number", event("text-number", text=12), "invalid_field"),
        ("text-too-long", event("text-too-long", text="word " * 2001), "invalid_text"),
        ("text-blank", event("text-blank", text="   "), "invalid_text"),
        ("num-captions-zero", event("num-captions-zero", num_captions=0), "invalid_field"),
        ("num-captions-negative", event("num-captions-negative", num_captions=-1), "invalid_field"),
        ("num-captions-string", event("num-captions-string", num_captions="3"), "invalid_field"),
        ("num-captions-float", event("num-captions-float", num_captions=3.0), "invalid_field"),
        ("num-captions-bool", event("num-captions-bool", num_captions=True), "invalid_field"),
        ("padding-500kb", event("padding-500kb", padding="x" * 500_000), CAPTION),  # unknown fields are ignored
        ("markup-in-text", event("markup-in-text", text="<script>alert(1)</script> '; DROP TABLE users; --"), CAPTION),
    ]
    b64_cases = [
        ("b64-not-base64", event("b64-not-base64", image={"b64": "@@@"}), "image_decode"),
        ("b64-empty", event("b64-empty", image={"b64": ""}), "image_decode"),
        ("b64-number", event("b64-number", image={"b64": 5}), "invalid_field"),
        ("b64-text", image("b64-text", b"hello, I am not a picture"), "image_decode"),
        ("b64-truncated-jpeg", image("b64-truncated-jpeg", jpeg_bytes()[:300]), "image_decode"),
        ("b64-truncated-png", image("b64-truncated-png", png_bytes()[:40]), "image_decode"),
        ("b64-bad-crc-png", image("b64-bad-crc-png", png_with_bad_crc()), "image_decode"),
        ("b64-png-bomb", image("b64-png-bomb", bomb_png()), "image_refused"),
        ("b64-gif-bomb", image("b64-gif-bomb", gif_header(65535, 65535)), "image_refused"),
        ("b64-bmp-bomb", image("b64-bmp-bomb", bmp_header(100_000, 100_000)), "image_refused"),
        ("b64-zlib-bomb", image("b64-zlib-bomb", zlib.compress(b"\0" * 5_000_000, 9)), "image_decode"),
        ("b64-eps", image("b64-eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"), "image_decode"),
        ("b64-svg", image("b64-svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'), "image_decode"),
        ("b64-webp-garbage", image("b64-webp-garbage", b"RIFF\x10\x00\x00\x00WEBPVP8 garbage"), "image_decode"),
        ("b64-over-limit", image("b64-over-limit", os.urandom(MAX_IMAGE_BYTES + 1000)), "image_refused"),
        ("b64-line-breaks", event("b64-line-breaks", image={"b64": base64.encodebytes(png_bytes()).decode()}), CAPTION),
        ("b64-one-pixel", image("b64-one-pixel", png_bytes(size=(1, 1))), CAPTION),
        ("b64-grey-jpeg", image("b64-grey-jpeg", grey_jpeg()), CAPTION),
    ]
    url_cases = [
        ("url-file", event("url-file", image={"url": "file:///etc/passwd"}), "image_refused"),
        ("url-ftp", event("url-ftp", image={"url": "ftp://example.com/a.png"}), "image_refused"),
        ("url-javascript", event("url-javascript", image={"url": "javascript:alert(1)"}), "image_refused"),
        ("url-loopback", event("url-loopback", image={"url": "http://127.0.0.1:9/a.png"}), "image_refused"),
        ("url-loopback-hex", event("url-loopback-hex", image={"url": "http://0x7f000001/a.png"}), "image_refused"),
        ("url-ipv6-loopback", event("url-ipv6-loopback", image={"url": "http://[::1]/a.png"}), "image_refused"),
        ("url-metadata", event("url-metadata", image={"url": "http://169.254.169.254/latest/meta-data/"}), "image_refused"),
        ("url-private", event("url-private", image={"url": "http://10.0.0.1/a.png"}), "image_refused"),
        ("url-credentials", event("url-credentials", image={"url": "http://user:pw@example.com/a.png"}), "image_refused"),
        ("url-bad-port", event("url-bad-port", image={"url": "http://example.com:99999/a.png"}), "image_refused"),
        ("url-no-host", event("url-no-host", image={"url": "http:///a.png"}), "image_refused"),
        ("url-empty", event("url-empty", image={"url": ""}), "image_refused"),
        ("url-10kb", event("url-10kb", image={"url": "http://127.0.0.1/" + "a" * 10_000}), "image_refused"),
    ]
    path_cases = [
        ("path-dotdot", event("path-dotdot", image={"path": "../../../etc/passwd"}), "image_refused"),
        ("path-absolute", event("path-absolute", image={"path": "/etc/passwd"}), "image_refused"),
        ("path-symlink-escape", event("path-symlink-escape", image={"path": "escape.png"}), "image_refused"),
        ("path-nul", event("path-nul", image={"path": "a\x00b.png"}), "image_refused"),
        ("path-missing", event("path-missing", image={"path": "nowhere.png"}), "image_fetch"),
        ("path-directory", event("path-directory", image={"path": "dir"}), "image_fetch"),
        ("path-not-an-image", event("path-not-an-image", image={"path": "notes.txt"}), "image_decode"),
    ]
    return json_cases + b64_cases + url_cases + path_cases


def grey_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (20, 20), 128).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.slow  # about 35 s; CI runs it
def test_a_hostile_corpus_cannot_stop_the_worker(worker_settings, captioner):
    settings = dataclasses.replace(worker_settings, max_image_bytes=MAX_IMAGE_BYTES, read_timeout_s=3.0)
    cases = corpus(settings.image_root)
    assert len(cases) >= 60 and len({name for name, _, _ in cases}) == len(cases)
    metadata = publish(settings.bootstrap_servers, settings.input_topic, [(b"mallory", value) for _, value, _ in cases])
    expected_captions = {name for name, _, outcome in cases if outcome == CAPTION}
    expected_letters = {(m.partition, m.offset): (name, outcome) for (name, _, outcome), m in zip(cases, metadata) if outcome != CAPTION}

    with running_worker(settings, captioner):
        letters = read_topic(settings.bootstrap_servers, settings.dlq_topic, until=lambda r: len(r) >= len(expected_letters))
        publish(settings.bootstrap_servers, settings.input_topic, [(b"alice", post_event("after", "alice", image_bytes=png_bytes(), text="still here"))])
        outputs = read_topic(
            settings.bootstrap_servers, settings.output_topic, until=lambda r: "after" in captions_by_post(r), timeout_s=120
        )

    got = {}
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers}
        got[(int(headers["source_partition"]), int(headers["source_offset"]))] = headers
    wrong = {
        name: got.get(position, {}).get("reason")
        for position, (name, reason) in expected_letters.items()
        if got.get(position, {}).get("reason") != reason
    }
    assert wrong == {}, f"dead-lettered with another reason (or not at all): {wrong}"
    assert all(headers["error_class"] and headers["error"] for headers in got.values())
    assert set(captions_by_post(outputs)) == expected_captions | {"after"}


def test_slow_image_servers_cannot_hold_a_running_worker(worker_settings, captioner):
    settings = dataclasses.replace(worker_settings, allow_hosts=("127.0.0.0/8",), read_timeout_s=2.0, batch_size=16)
    with slow_http_server() as base, running_worker(settings, captioner):
        slow = [(b"u", post_event(f"slow-{mode}-{i}", "u", image_url=f"{base}/{mode}/{i}")) for i in range(3) for mode in SLOW_MODES]
        good = [(b"u", post_event("fast", "u", image_url=f"{base}/image/fast"))]
        start = time.monotonic()
        publish(settings.bootstrap_servers, settings.input_topic, slow + good)
        outputs = read_topic(settings.bootstrap_servers, settings.output_topic, until=lambda r: "fast" in captions_by_post(r))
        elapsed = time.monotonic() - start
        letters = read_topic(settings.bootstrap_servers, settings.dlq_topic, until=lambda r: len(r) >= len(slow))

    assert "fast" in captions_by_post(outputs)
    assert elapsed < 2 * settings.read_timeout_s + 10  # one or two batches of budget, plus the tiny model
    assert sorted(dict(letter.headers)["reason"] for letter in letters) == [b"image_fetch"] * len(slow)
