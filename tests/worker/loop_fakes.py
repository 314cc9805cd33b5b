"""Fake kafka-python clients and profile store that write each call into one shared journal (no broker),
and a WorkerLoop wired to them: the journal is how the loop and checkpoint tests check the order."""

from __future__ import annotations

from concurrent.futures import Future as Loading

from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from kafka.structs import TopicPartition
from worker_samples import png_bytes

from worker.events import post_event
from worker.http import Readiness
from worker.images import ImageLoader
from worker.loop import StopFlag, WorkerLoop
from worker.metrics import WorkerMetrics
from worker.processing import InputRecord, Processor
from worker.settings import ImagePolicy, Settings


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
    """Hands out the queued records, then asks the loop to stop; ``commit_errors`` fail commits in turn."""

    def __init__(
        self, journal: list, records: list, stop: StopFlag, *, commit_errors: list[Exception] | None = None
    ) -> None:
        self.journal, self.records, self.stop = journal, list(records), stop
        self.commit_errors = list(commit_errors or [])
        self.committed: dict = {}
        self.listener = None
        self.closed_with_autocommit: bool | None = None
        self.held: set = set()  # paused partitions

    def subscribe(self, topics, listener=None):
        self.listener = listener
        listener.on_partitions_assigned({TopicPartition("posts", 0)})

    def poll(self, timeout_ms=0, max_records=None):
        if self.held:  # the one partition is paused
            return {}
        if not self.records:
            self.stop.set()
            return {}
        batch, self.records = self.records[:max_records], self.records[max_records:]
        return {TopicPartition("posts", 0): batch}

    def commit(self, offsets):
        self.journal.append("commit")
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        self.committed.update({tp: meta.offset for tp, meta in offsets.items()})

    def assignment(self):
        return {TopicPartition("posts", 0)}

    def highwater(self, tp):
        return None

    def pause(self, *partitions):
        self.held.update(partitions)

    def resume(self, *partitions):
        self.held.difference_update(partitions)

    def paused(self):
        return set(self.held)

    def close(self, autocommit=True):
        self.journal.append("consumer.close")
        self.closed_with_autocommit = autocommit


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

    def forget_user(self, user_id):
        self.journal.append(f"forget_user:{user_id}")


def make_loop(
    fake_captioner, records, *, fail_topic=None, max_bytes=None, batch_size=10, linger_ms=0, store=None,
    consumer_class=FakeConsumer, commit_errors=None, pipeline_depth=1, loading: Loading | None = None,
):
    """A loop over fake clients; ``store`` defaults to a JournalStore, a real one shows idempotence.

    ``loading`` stands for a model still loading: the loop gets it instead of a processor.
    """
    journal: list[str] = []
    stop = StopFlag()
    settings = Settings(
        input_topic="posts", output_topic="out", dlq_topic="dlq", batch_size=batch_size, linger_ms=linger_ms,
        pipeline_depth=pipeline_depth,
    )
    store = JournalStore(journal) if store is None else store
    consumer = consumer_class(journal, records, stop, commit_errors=commit_errors)
    producer = FakeProducer(journal, fail_topic, max_bytes)
    processor = Processor(fake_captioner, store, ImageLoader(ImagePolicy()))
    loop = WorkerLoop(settings, loading or processor, store, consumer, producer, WorkerMetrics(), Readiness(), stop)
    return loop, journal, consumer, producer, store


def records(n: int, bad: int = 0) -> list[InputRecord]:
    good = [InputRecord("posts", 0, i, post_event(f"p{i}", "u", image_bytes=png_bytes(), text="words here")) for i in range(n)]
    return good + [InputRecord("posts", 0, n + i, b"not json") for i in range(bad)]
