"""The consumer loop with fake Kafka clients: the order of produce, flush, fold and commit."""

from __future__ import annotations

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from kafka.structs import TopicPartition

from worker.events import post_event
from worker.http import Readiness
from worker.images import ImageLoader, ImagePolicy
from worker.loop import StopFlag, WorkerLoop
from worker.metrics import WorkerMetrics
from worker.processing import InputRecord, Processor
from worker.settings import Settings
from worker_samples import png_bytes


class Future:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def get(self, timeout=None):
        if self.error:
            raise self.error


class FakeProducer:
    def __init__(self, journal: list, fail_topic: str | None = None, max_bytes: int | None = None) -> None:
        self.journal, self.fail_topic, self.max_bytes = journal, fail_topic, max_bytes
        self.sent: list[tuple[str, bytes | None, list]] = []

    def send(self, topic, key=None, value=None, headers=None):
        if self.max_bytes is not None and len(value or b"") > self.max_bytes:
            raise MessageSizeTooLargeError("too large")
        self.journal.append(f"send:{topic}")
        self.sent.append((topic, value, headers or []))
        return Future(KafkaTimeoutError("broker gone") if topic == self.fail_topic else None)

    def flush(self):
        self.journal.append("flush")

    def close(self, timeout=None):
        self.journal.append("producer.close")


class FakeConsumer:
    """Hands out the queued records in one poll, then asks the loop to stop."""

    def __init__(self, journal: list, records: list, stop: StopFlag) -> None:
        self.journal, self.records, self.stop = journal, list(records), stop
        self.committed: dict = {}

    def subscribe(self, topics, listener=None):
        listener.on_partitions_assigned({TopicPartition("posts", 0)})

    def poll(self, timeout_ms=0, max_records=None):
        if not self.records:
            self.stop.set()
            return {}
        batch, self.records = self.records[:max_records], self.records[max_records:]
        return {TopicPartition("posts", 0): batch}

    def commit(self, offsets):
        self.journal.append("commit")
        self.committed.update({tp: meta.offset for tp, meta in offsets.items()})

    def assignment(self):
        return {TopicPartition("posts", 0)}

    def highwater(self, tp):
        return None

    def close(self, autocommit=True):
        self.journal.append("consumer.close")


class JournalStore:
    def __init__(self, journal: list) -> None:
        self.journal, self.posts = journal, []

    def top_keywords(self, user_ids, k):
        self.journal.append("read_profiles")
        return {u: [] for u in user_ids}

    def add_posts(self, posts):
        self.journal.append("add_posts")
        self.posts += posts
        return len(posts)


def make_loop(fake_captioner, records, *, fail_topic=None, max_bytes=None, batch_size=10):
    journal: list[str] = []
    stop = StopFlag()
    settings = Settings(input_topic="posts", output_topic="out", dlq_topic="dlq", batch_size=batch_size, linger_ms=0)
    store = JournalStore(journal)
    consumer = FakeConsumer(journal, records, stop)
    producer = FakeProducer(journal, fail_topic, max_bytes)
    processor = Processor(fake_captioner, store, ImageLoader(ImagePolicy()))
    loop = WorkerLoop(settings, processor, store, consumer, producer, WorkerMetrics(), Readiness(), stop)
    return loop, journal, consumer, producer, store


def records(n: int, bad: int = 0) -> list[InputRecord]:
    good = [InputRecord("posts", 0, i, post_event(f"p{i}", "u", image_bytes=png_bytes(), text="words here")) for i in range(n)]
    return good + [InputRecord("posts", 0, n + i, b"not json") for i in range(bad)]


def test_order_is_read_produce_flush_fold_commit(fake_captioner):
    loop, journal, consumer, producer, store = make_loop(fake_captioner, records(3, bad=1))
    loop.run()
    assert journal == [
        "read_profiles", "send:out", "send:out", "send:out", "send:dlq", "flush", "add_posts", "commit",
        "consumer.close", "producer.close",
    ]
    assert consumer.committed == {TopicPartition("posts", 0): 4}
    assert len(store.posts) == 3


def test_batches_are_cut_at_batch_size(fake_captioner):
    loop, journal, consumer, _, _ = make_loop(fake_captioner, records(5), batch_size=2)
    loop.run()
    assert journal.count("commit") == 3 and journal.count("read_profiles") == 3
    assert consumer.committed == {TopicPartition("posts", 0): 5}


def test_failed_produce_means_no_fold_and_no_commit(fake_captioner):
    loop, journal, consumer, _, store = make_loop(fake_captioner, records(2), fail_topic="out")
    with pytest.raises(KafkaTimeoutError):
        loop.run()
    assert "add_posts" not in journal and "commit" not in journal and store.posts == []
    assert "consumer.close" in journal  # clients are closed even on failure, without committing


def test_oversized_dead_letter_goes_without_its_value(fake_captioner):
    big = InputRecord("posts", 0, 0, b"x" * 5000)
    loop, journal, consumer, producer, _ = make_loop(fake_captioner, [big], max_bytes=1000)
    loop.run()
    [(topic, value, headers)] = producer.sent
    assert topic == "dlq" and value is None
    assert dict(headers)["value_dropped_bytes"] == b"5000" and dict(headers)["reason"] == b"not_json"
    assert consumer.committed == {TopicPartition("posts", 0): 1}
