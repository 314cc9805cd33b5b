"""`uapt worker` as a real process: SIGTERM stops it cleanly, SIGKILL loses nothing."""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import subprocess
import time

import pytest
from kafka.structs import TopicPartition
from worker_samples import (
    captions_by_post,
    good_posts,
    png_bytes,
    publish,
    read_topic,
    start_worker_process,
    wait_ready,
)

from profiles import Post
from profiles.store import ProfileStore
from worker.broker import free_port
from worker.events import post_event
from worker.kafka_io import make_consumer

pytestmark = pytest.mark.integration


def committed_offsets(settings) -> dict[int, int]:
    consumer = make_consumer(settings.bootstrap_servers, settings.group_id, security=settings.kafka_security)
    try:
        return {p: consumer.committed(TopicPartition(settings.input_topic, p)) or 0 for p in range(4)}
    finally:
        consumer.close(autocommit=False)


def stop(process: subprocess.Popen, signum: int, *, times: int = 1, timeout_s: float = 60) -> int:
    for _ in range(times):
        process.send_signal(signum)
    return process.wait(timeout=timeout_s)


@pytest.mark.slow  # ~20-30 s: a fresh process loads the model and joins the group
def test_sigterm_finishes_the_batch_commits_and_exits_zero(worker_settings, tmp_path):
    settings = dataclasses.replace(worker_settings, metrics_port=free_port())
    process = start_worker_process(settings, tmp_path / "worker.log")
    try:
        wait_ready(settings.metrics_port, process=process)
        sent = publish(settings.bootstrap_servers, settings.input_topic, good_posts(40, users=8))
        first = read_topic(settings.bootstrap_servers, settings.output_topic, until=lambda r: len(r) >= 1)
        assert first, "no caption before SIGTERM"
        # Twice, as `timeout` and some supervisors do: the second signal must not deadlock the first.
        assert stop(process, signal.SIGTERM, times=2) == 0, (tmp_path / "worker.log").read_text()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()

    committed = committed_offsets(settings)
    assert sum(committed.values()) > 0
    captioned = set(captions_by_post(read_topic(settings.bootstrap_servers, settings.output_topic, until=lambda r: False, timeout_s=3)))
    for i, meta in enumerate(sent):
        if meta.offset < committed[meta.partition]:
            assert f"p{i}" in captioned, f"p{i} committed (partition {meta.partition}) without a caption"


def user_posts(n: int, users: int, seed: int) -> list[Post]:
    rng = random.Random(seed)
    vocabulary = "sun beach city night coffee tea dog cat hike lake snow party food art music book rain".split()
    return [
        Post(f"post{i}", f"u{rng.randrange(users)}", " ".join(rng.choices(vocabulary, k=rng.randint(2, 6))))
        for i in range(n)
    ]


POISON = [
    b"[" * 1000 + b"]" * 1000,  # RecursionError in json.loads
    b'{"schema": "uapt.post/1", "post_id": ' + b"9" * 5000 + b"}",  # past Python's integer digit limit
    post_event("poison-path", "u0", image_path="a\x00b.png"),
]


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing_and_counts_nothing_twice(worker_settings, tmp_path):
    settings = dataclasses.replace(worker_settings, metrics_port=free_port(), batch_size=16, num_captions=1)
    posts = user_posts(300, users=12, seed=3)
    messages = [
        (p.user_id.encode(), post_event(p.post_id, p.user_id, image_bytes=png_bytes((i % 256, 0, 0), (16, 16)), text=p.text))
        for i, p in enumerate(posts)
    ]
    for i, poison in enumerate(POISON * 3):  # poison messages among the posts, on their users' partitions
        messages.insert(40 + 80 * i, (f"u{i}".encode(), poison))
    sent = publish(settings.bootstrap_servers, settings.input_topic, messages)
    poisoned = {(meta.partition, meta.offset) for (_, value), meta in zip(messages, sent) if value in POISON}
    rng = random.Random(11)
    log = tmp_path / "worker.log"
    seen = 0
    for _ in range(3):
        process = start_worker_process(settings, log)
        try:
            wait_ready(settings.metrics_port, process=process)
            # Kill mid-stream: after at least one more caption came out, at a random moment.
            seen = len(read_topic(settings.bootstrap_servers, settings.output_topic, until=lambda r, n=seen: len(r) > n))
            assert seen < len(posts), "the worker finished before it could be killed; make the stream longer"
            time.sleep(rng.uniform(0.0, 2.0))
        finally:
            process.kill()
            process.wait()

    process = start_worker_process(settings, log)
    try:
        outputs = read_topic(
            settings.bootstrap_servers, settings.output_topic,
            until=lambda r: len(captions_by_post(r)) >= len(posts), timeout_s=300,
        )
        assert stop(process, signal.SIGTERM) == 0
    finally:
        if process.poll() is None:
            process.kill()

    assert set(captions_by_post(outputs)) == {p.post_id for p in posts}
    assert all(json.loads(r.value)["captions"] for r in outputs)
    letters = read_topic(settings.bootstrap_servers, settings.dlq_topic, until=lambda r: False, timeout_s=3)
    assert {(int(dict(r.headers)["source_partition"]), int(dict(r.headers)["source_offset"])) for r in letters} == poisoned

    rebuilt = ProfileStore(f"sqlite:///{tmp_path / 'rebuilt.db'}")
    live = ProfileStore(settings.database_url, create=False)
    try:
        rebuilt.add_posts(posts)
        users = sorted({p.user_id for p in posts})
        assert live.stats() == rebuilt.stats()
        assert live.top_keywords(users, 1000) == rebuilt.top_keywords(users, 1000)
    finally:
        live.close()
        rebuilt.close()
