"""The consumer loop with fake Kafka clients: the order of produce, flush, fold and commit."""

from __future__ import annotations

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.structs import TopicPartition
from loop_fakes import make_loop, records

from worker.processing import InputRecord


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


def test_stage_labels_keep_their_names(fake_captioner):
    """Dashboards and alerts select on these label values: the Stage enum must not rename them."""
    loop, *_ = make_loop(fake_captioner, records(2))
    loop.run()
    exposition = loop.metrics.render().decode()
    for stage in ("parse", "image", "profile_read", "generate", "produce", "profile_write"):
        assert f'uapt_stage_seconds_count{{stage="{stage}"}} 1.0' in exposition
