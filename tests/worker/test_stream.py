"""The worker against the real embedded broker: end to end, dead letters, two workers, metrics."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families
from worker_samples import (
    bomb_png,
    captions_by_post,
    good_posts,
    jpeg_bytes,
    png_bytes,
    publish,
    read_topic,
    running_worker,
    wait_ready,
)

from profiles.store import ProfileStore

pytestmark = pytest.mark.integration


Metrics = dict[tuple[str, tuple], float]


def scrape_text(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def scrape(port: int) -> Metrics:
    text = scrape_text(port)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape_until(port: int, done: Callable[[Metrics], bool], timeout_s: float = 30.0) -> Metrics:
    """Scrape until `done` holds: a consumer can read an output before the worker's producer hears the broker's ack."""
    deadline = time.monotonic() + timeout_s
    metrics = scrape(port)
    while not done(metrics) and time.monotonic() < deadline:
        time.sleep(0.2)
        metrics = scrape(port)
    return metrics


def all_stages_observed(metrics: Metrics) -> bool:
    """Every batch counted so far has had each of its stages observed (the worker observes them after the commit)."""
    batches = metrics.get(("uapt_batch_size_count", ()), 0)
    stages = [value for (name, _), value in metrics.items() if name == "uapt_stage_seconds_count"]
    return batches > 0 and len(stages) >= 6 and all(count == batches for count in stages)


def test_end_to_end_captions_and_profiles(worker_settings, captioner):
    posts = good_posts(12)
    publish(worker_settings.bootstrap_servers, worker_settings.input_topic, posts)
    with running_worker(worker_settings, captioner) as info:
        outputs = read_topic(worker_settings.bootstrap_servers, worker_settings.output_topic, until=lambda r: len(r) >= 12)
        port = info["port"]
        # the lag gauge is refreshed at most once a second, from the consumer's fetch positions: wait for it too
        metrics = scrape_until(
            port,
            lambda m: m.get(("uapt_captions_produced_total", ())) == 12
            and all_stages_observed(m)
            and any(name == "uapt_consumer_lag" for name, _ in m),
        )
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200

    by_post = captions_by_post(outputs)
    assert set(by_post) == {f"p{i}" for i in range(12)}
    assert all(len(messages) == 1 for messages in by_post.values())
    for record in outputs:
        message = json.loads(record.value)
        assert set(message) == {
            "schema", "post_id", "user_id", "captions", "keywords", "model", "latency_ms",
            "abstained", "reason", "ood_score", "confidence",
        }
        assert message["abstained"] is False and message["reason"] is None and message["ood_score"] is None  # no OOD file
        assert message["schema"] == "uapt.caption/1" and record.key == message["user_id"].encode()
        assert 1 <= len(message["captions"]) <= 2
        assert all(isinstance(c["text"], str) and isinstance(c["score"], float) for c in message["captions"])
        assert message["latency_ms"] >= 0 and message["model"] == captioner.model_id

    store = ProfileStore(worker_settings.database_url, create=False)
    try:
        assert store.stats().posts == 12 and store.stats().users == 3
        assert {k.term for k in store.top_keywords(["user0"], 5)["user0"]} == {"beach", "sunset"}
    finally:
        store.close()

    assert metrics[("uapt_events_consumed_total", ())] == 12
    assert metrics[("uapt_captions_produced_total", ())] == 12
    assert metrics[("uapt_batch_size_sum", ())] == 12
    assert metrics[("uapt_stage_seconds_count", (("stage", "generate"),))] >= 2  # batch size 8 -> at least 2 batches
    assert metrics[("uapt_end_to_end_seconds_count", ())] == 12
    info = (("checkpoint", ""), ("model_id", captioner.model_id), ("preset", "tiny"), ("serving_dtype", "float32"))
    assert metrics[("uapt_model_info", info)] == 1
    assert any(name == "uapt_consumer_lag" for name, _ in metrics)


def test_scraped_metrics_pass_promtool_lint(worker_settings, captioner):
    """Prometheus' own linter, a second real peer beside prometheus_client's parser (CI installs it)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; .ci/run installs it)")
    publish(worker_settings.bootstrap_servers, worker_settings.input_topic, good_posts(3))
    with running_worker(worker_settings, captioner) as info:
        read_topic(worker_settings.bootstrap_servers, worker_settings.output_topic, until=lambda r: len(r) >= 3)
        exposition = scrape_text(info["port"])
    assert "uapt_stage_seconds_bucket" in exposition
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def bad_events(image_root) -> dict[str, tuple[bytes, str]]:
    """Name -> (message bytes, expected reason header)."""
    outside = image_root.parent / "outside.png"
    outside.write_bytes(png_bytes())
    os.symlink(outside, image_root / "link.png")

    def event(image: dict, **fields) -> bytes:
        document = {"schema": "uapt.post/1", "post_id": "bad", "user_id": "mallory", "image": image, **fields}
        return json.dumps(document).encode()

    def b64(data: bytes) -> dict:
        return {"b64": base64.b64encode(data).decode()}

    ok_image = b64(png_bytes())
    return {
        "not json": (b"{this is not json", "not_json"),
        "json not an object": (b"[1, 2, 3]", "not_object"),
        "missing post_id": (json.dumps({"schema": "uapt.post/1", "user_id": "u", "image": ok_image}).encode(), "invalid_field"),
        "mistyped user_id": (event(ok_image, user_id=42), "invalid_field"),
        "unknown schema": (event(ok_image, schema="uapt.post/7"), "unknown_schema"),
        "bad base64": (event({"b64": "*** not base64 ***"}), "image_decode"),
        "not an image": (event(b64(b"hello, I am text")), "image_decode"),
        "truncated jpeg": (event(b64(jpeg_bytes()[:500])), "image_decode"),
        "decompression bomb": (event(b64(bomb_png())), "image_refused"),
        "file url": (event({"url": "file:///etc/passwd"}), "image_refused"),
        "loopback url": (event({"url": "http://127.0.0.1:9/x.png"}), "image_refused"),
        "private url": (event({"url": "http://10.0.0.1/x.png"}), "image_refused"),
        "metadata url": (event({"url": "http://169.254.169.254/latest/meta-data/"}), "image_refused"),
        "dot-dot path": (event({"path": "../outside.png"}), "image_refused"),
        "symlink escape": (event({"path": "link.png"}), "image_refused"),
        "5 MB text": (event(ok_image, text="spam " * 1_000_000), "invalid_text"),
        "not utf-8": (b'{"schema": "uapt.post/1", "post_id": "\xff\xfe"}', "not_utf8"),
        "empty message": (b"", "empty"),
    }


def failure_count(metrics: Metrics) -> float:
    return sum(value for (name, _), value in metrics.items() if name == "uapt_failures_total")


def test_bad_inputs_go_to_the_dlq_and_good_ones_still_get_captions(worker_settings, captioner):
    bad = bad_events(worker_settings.image_root)
    assert len(bad) >= 15
    good = good_posts(len(bad) + 1, prefix="good")
    messages = [good[0]]
    for i, (value, _) in enumerate(bad.values()):
        messages += [(b"mallory", value), good[i + 1]]
    publish(worker_settings.bootstrap_servers, worker_settings.input_topic, messages)

    with running_worker(worker_settings, captioner) as info:
        outputs = read_topic(worker_settings.bootstrap_servers, worker_settings.output_topic, until=lambda r: len(r) >= len(good))
        dead = read_topic(worker_settings.bootstrap_servers, worker_settings.dlq_topic, until=lambda r: len(r) >= len(bad))
        metrics = scrape_until(info["port"], lambda m: failure_count(m) == len(bad))

    assert set(captions_by_post(outputs)) == {f"good{i}" for i in range(len(good))}
    assert len(dead) == len(bad)
    by_value = {record.value: record for record in dead}
    for name, (value, reason) in bad.items():
        record = by_value.get(value)
        assert record is not None, f"{name}: not in the DLQ with its original bytes"
        headers = {key: val.decode() for key, val in record.headers}
        assert headers["reason"] == reason, f"{name}: {headers}"
        assert headers["error"] and headers["error_class"].endswith(("Error", "Refused"))
        assert headers["source_topic"] == worker_settings.input_topic
        assert int(headers["source_offset"]) >= 0 and int(headers["source_partition"]) in range(4)
    expected_failures = Counter(reason for _, reason in bad.values())
    for reason, count in expected_failures.items():
        assert metrics[("uapt_failures_total", (("reason", reason),))] == count
    assert metrics[("uapt_events_consumed_total", ())] == len(messages)


def test_two_workers_split_partitions_and_caption_everything(worker_settings, captioner):
    posts = good_posts(40, users=8)
    with running_worker(worker_settings, captioner) as first, running_worker(worker_settings, captioner) as second:
        wait_ready(first["port"])
        wait_ready(second["port"])
        publish(worker_settings.bootstrap_servers, worker_settings.input_topic, posts)
        outputs = read_topic(worker_settings.bootstrap_servers, worker_settings.output_topic, until=lambda r: len(captions_by_post(r)) >= 40)
        consumed = [scrape(w["port"])[("uapt_events_consumed_total", ())] for w in (first, second)]
    assert set(captions_by_post(outputs)) == {f"p{i}" for i in range(40)}
    assert sum(consumed) >= 40 and min(consumed) > 0, consumed


def test_postgres_profile_store(worker_settings, captioner, postgres_url):
    settings = dataclasses.replace(worker_settings, database_url=postgres_url)
    publish(settings.bootstrap_servers, settings.input_topic, good_posts(6))
    with running_worker(settings, captioner):
        outputs = read_topic(settings.bootstrap_servers, settings.output_topic, until=lambda r: len(r) >= 6)
    assert set(captions_by_post(outputs)) == {f"p{i}" for i in range(6)}
    store = ProfileStore(postgres_url, create=False)
    try:
        assert store.stats().posts == 6
        assert {k.term for k in store.top_keywords(["user1"], 5)["user1"]} == {"coffee", "latte", "art"}
    finally:
        store.close()
