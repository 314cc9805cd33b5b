"""The consumer loop with fake Kafka clients: the order of produce, flush, fold and commit."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.structs import TopicPartition
from loop_fakes import FakeConsumer, make_loop, records
from prometheus_client.parser import text_string_to_metric_families
from worker_samples import FakeCaptioner

from model.errors import ModelError
from worker.images import ImageLoader
from worker.processing import InputRecord, Processor
from worker.settings import ImagePolicy


def test_order_is_read_produce_flush_fold_commit(fake_captioner):
    loop, journal, consumer, producer, store = make_loop(fake_captioner, records(3, bad=1))
    loop.run()
    assert journal == [
        "read_profiles", "send:out", "send:out", "send:out", "send:dlq", "flush", "add_posts", "commit",
        "consumer.close", "producer.close",
    ]
    assert consumer.committed == {TopicPartition("posts", 0): 4}
    assert len(store.posts) == 3


def test_the_loop_holds_its_partitions_paused_while_the_model_loads(fake_captioner):
    loading: Future[Processor] = Future()
    loop, journal, consumer, _, store = make_loop(fake_captioner, records(2), loading=loading)
    running = threading.Thread(target=loop.run)
    running.start()
    deadline = time.monotonic() + 10
    while not consumer.held and time.monotonic() < deadline:
        time.sleep(0.01)
    assert consumer.held == {TopicPartition("posts", 0)}  # in the group, taking nothing
    assert journal == [] and len(consumer.records) == 2
    loading.set_result(Processor(fake_captioner, store, ImageLoader(ImagePolicy())))
    running.join(timeout=10)
    assert not running.is_alive()
    assert consumer.committed == {TopicPartition("posts", 0): 2} and len(store.posts) == 2


def test_a_failed_load_ends_the_loop_with_its_error_and_closes_the_clients(fake_captioner):
    loading: Future[Processor] = Future()
    loading.set_exception(ModelError("no such checkpoint"))
    loop, journal, consumer, _, _ = make_loop(fake_captioner, records(2), loading=loading)
    with pytest.raises(ModelError, match="no such checkpoint"):
        loop.run()
    assert journal == ["consumer.close", "producer.close"] and consumer.committed == {}


def test_a_stop_during_the_load_ends_the_loop_without_waiting_for_the_model(fake_captioner):
    loop, journal, consumer, _, _ = make_loop(fake_captioner, records(2), loading=Future())
    loop.stop()
    loop.run()
    assert journal == ["consumer.close", "producer.close"] and len(consumer.records) == 2


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


def test_stage_labels_keep_their_names(fake_captioner):
    """Dashboards and alerts select on these label values: the Stage enum must not rename them."""
    loop, *_ = make_loop(fake_captioner, records(2))
    loop.run()
    exposition = loop.metrics.render().decode()
    for stage in ("parse", "image", "encode", "profile_read", "generate", "produce", "profile_write"):
        assert f'uapt_stage_seconds_count{{stage="{stage}"}} 1.0' in exposition


def test_every_dead_letter_reason_is_a_series_from_the_start(fake_captioner):
    """A reason's first failure must be an increase of a series that exists, or rate() misses it;
    alerts select on these label values, so the Reason enum must not rename them."""
    loop, *_ = make_loop(fake_captioner, records(1))
    loop.run()
    exposition = loop.metrics.render().decode()
    reasons = (
        "empty", "not_utf8", "not_json", "too_deep", "not_object", "unknown_schema", "invalid_event", "invalid_field",
        "invalid_text", "invalid_forget", "image_invalid", "image_refused", "image_fetch", "image_decode",
        "profile_error", "model_error", "internal_error",
    )
    for reason in reasons:
        assert f'uapt_failures_total{{reason="{reason}"}} 0.0' in exposition
    assert exposition.count("uapt_failures_total{") == len(reasons)


class HangingCaptioner(FakeCaptioner):
    """Holds the batch inside the model call until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def caption(self, images, keywords, num_captions=3):
        self.entered.set()
        assert self.release.wait(10)
        return super().caption(images, keywords, num_captions)


class LaggingConsumer(FakeConsumer):
    """A partition whose end is at offset 50; the fetch position runs ahead of the batch, as kafka-python's does."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fetched = 0

    def poll(self, timeout_ms=0, max_records=None):
        polled = super().poll(timeout_ms, max_records)
        for batch in polled.values():
            self.fetched = max([self.fetched] + [r.offset + 1 for r in batch])
        return polled

    def highwater(self, tp):
        return 50

    def position(self, tp):
        return self.fetched


def gauges(loop) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(loop.metrics.render().decode())
        for sample in family.samples
        if sample.name in ("uapt_consumer_lag", "uapt_batch_age_seconds")
    }


def test_lag_and_batch_age_are_true_while_a_batch_hangs():
    captioner = HangingCaptioner()
    loop, *_ = make_loop(captioner, records(3), consumer_class=LaggingConsumer)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    assert captioner.entered.wait(10)
    time.sleep(0.3)
    during = gauges(loop)
    captioner.release.set()
    thread.join(10)
    after = gauges(loop)

    assert during["uapt_consumer_lag"] == 50  # the batch's 3 records are not committed: they still count
    assert during["uapt_batch_age_seconds"] >= 0.3
    assert after == {"uapt_consumer_lag": 47, "uapt_batch_age_seconds": 0.0}
