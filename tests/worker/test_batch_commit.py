"""The at-least-once batch commit with fake Kafka clients: flush, then fold, then commit; rebalances lose nothing."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from kafka.errors import CommitFailedError, KafkaTimeoutError
from kafka.structs import TopicPartition
from loop_fakes import FakeConsumer, FakeProducer, JournalStore, make_loop, records

from profiles import Post
from worker.commit import BatchCommit
from worker.dlq import DeadLetter
from worker.loop import StopFlag
from worker.processing import BatchResult, InputRecord, OutputMessage
from worker.settings import Settings
from worker.stages import Stage

SETTINGS = Settings(input_topic="posts", output_topic="out", dlq_topic="dlq")
P0, P1 = TopicPartition("posts", 0), TopicPartition("posts", 1)


def batch() -> tuple[list[InputRecord], BatchResult]:
    """Two captioned posts on partition 0 and a dead letter on partition 1, as the processor hands them over."""
    consumed = [InputRecord("posts", 0, 4, b"a"), InputRecord("posts", 0, 5, b"b"), InputRecord("posts", 1, 7, b"x")]
    result = BatchResult(
        outputs=[OutputMessage(b"u", b"{}", "p4", 0), OutputMessage(b"u", b"{}", "p5", 0)],
        dead_letters=[DeadLetter(b"u", b"x", [("reason", b"not_json")])],
        posts=[Post("p4", "u", "sunny beach"), Post("p5", "u", "beach waves")],
    )
    return consumed, result


def commit_over(consumer, store, journal: list, *, fail_topic: str | None = None) -> BatchCommit:
    return BatchCommit(consumer, FakeProducer(journal, fail_topic), store, SETTINGS, {})


def test_commit_flushes_then_folds_then_commits():
    journal: list[str] = []
    consumer, store = FakeConsumer(journal, [], StopFlag()), JournalStore(journal)
    stage_seconds: dict[Stage, float] = {}
    commit = BatchCommit(consumer, FakeProducer(journal), store, SETTINGS, stage_seconds)
    commit.send(*batch())
    assert journal == ["send:out", "send:out", "send:dlq"]  # sent, nothing waited for yet

    commit.commit()
    assert journal == ["send:out", "send:out", "send:dlq", "flush", "add_posts", "commit"]
    assert consumer.committed == {P0: 6, P1: 8}  # each partition past its last record
    assert [p.post_id for p in store.posts] == ["p4", "p5"]
    assert set(stage_seconds) == {Stage.PRODUCE, Stage.PROFILE_WRITE}


def test_a_batch_without_posts_commits_without_a_fold():
    journal: list[str] = []
    consumer = FakeConsumer(journal, [], StopFlag())
    commit = commit_over(consumer, JournalStore(journal), journal)
    consumed, result = batch()
    commit.send(consumed, BatchResult(outputs=result.outputs))
    commit.commit()
    assert journal == ["send:out", "send:out", "flush", "commit"]
    assert consumer.committed == {P0: 6, P1: 8}


def test_an_unacknowledged_send_stops_before_the_fold():
    journal: list[str] = []
    consumer, store = FakeConsumer(journal, [], StopFlag()), JournalStore(journal)
    commit = commit_over(consumer, store, journal, fail_topic="dlq")
    commit.send(*batch())
    with pytest.raises(KafkaTimeoutError):
        commit.commit()
    assert journal[-1] == "flush" and store.posts == [] and consumer.committed == {}


def test_partitions_revoked_mid_batch_lose_nothing(store, caplog):
    """Kafka refuses the commit (the group moved on); the new owner replays the batch and counts no post twice."""
    journal: list[str] = []
    revoked = FakeConsumer(journal, [], StopFlag(), commit_errors=[CommitFailedError("member kicked out")])
    with caplog.at_level(logging.WARNING, logger="worker.commit"):
        commit = commit_over(revoked, store, journal)
        commit.send(*batch())
        commit.commit()  # handled: the loop goes on
    assert revoked.committed == {} and "will be replayed" in caplog.text
    assert store.stats().posts == 2  # folded before the commit was refused
    keywords = store.top_keywords(["u"], 5)

    new_owner = FakeConsumer(journal, [], StopFlag())
    replay = commit_over(new_owner, store, journal)
    replay.send(*batch())
    replay.commit()
    assert new_owner.committed == {P0: 6, P1: 8}
    assert store.stats().posts == 2 and store.top_keywords(["u"], 5) == keywords


def test_loop_goes_on_after_a_refused_commit_and_the_replay_folds_nothing_twice(fake_captioner, store):
    replayed = records(3) + records(3)  # the batch, then the same records again from the last committed offset
    loop, journal, consumer, producer, _ = make_loop(
        fake_captioner, replayed, batch_size=3, store=store, commit_errors=[CommitFailedError("rebalanced")]
    )
    loop.run()
    assert journal.count("commit") == 2 and consumer.committed == {P0: 3}
    assert len(producer.sent) == 6  # captions may repeat (at-least-once) ...
    assert store.stats().posts == 3  # ... profiles do not


class RevokingConsumer(FakeConsumer):
    """Loses partition 1 in its second poll, while the loop is still gathering the batch."""

    polls = 0

    def poll(self, timeout_ms=0, max_records=None):
        self.polls += 1
        if self.polls == 2:
            self.listener.on_partitions_revoked({P1})
        return super().poll(timeout_ms, max_records)


def test_records_of_partitions_revoked_while_gathering_are_left_to_the_new_owner(fake_captioner):
    first, second = records(2)
    gathered = [first, dataclasses.replace(second, partition=1, offset=0)]
    loop, _, consumer, producer, store = make_loop(
        fake_captioner, gathered, batch_size=10, linger_ms=1000, consumer_class=RevokingConsumer
    )
    loop.run()
    assert [post.post_id for post in store.posts] == ["p0"] and len(producer.sent) == 1
    assert consumer.committed == {P0: 1}  # nothing committed for the partition we lost


def test_a_failed_commit_stops_the_loop_with_the_offsets_uncommitted(fake_captioner, store):
    """Any other commit error ends the worker (it exits, the batch is replayed on restart), as before."""
    loop, journal, consumer, _, _ = make_loop(
        fake_captioner, records(2), store=store, commit_errors=[KafkaTimeoutError("coordinator gone")]
    )
    with pytest.raises(KafkaTimeoutError):
        loop.run()
    assert journal[-3:] == ["commit", "consumer.close", "producer.close"]
    assert consumer.committed == {} and consumer.closed_with_autocommit is False
    assert store.stats().posts == 2  # folded, and idempotent for the replay

    loop, _, consumer, _, _ = make_loop(fake_captioner, records(2), store=store)
    loop.run()
    assert consumer.committed == {P0: 2} and store.stats().posts == 2
