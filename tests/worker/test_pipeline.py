"""The pipelined loop with fake clients: batch n+1 is prepared while batch n generates, and the
order of the README's data-flow diagram still holds batch by batch (fold, then commit, then the next profile read)."""

from __future__ import annotations

import json
import threading

import pytest
from kafka.structs import TopicPartition
from loop_fakes import FakeConsumer, JournalStore, make_loop, records
from worker_samples import FakeCaptioner, png_bytes

from profiles.errors import DatabaseUnavailable
from worker.events import post_event
from worker.processing import InputRecord
from worker.settings import Settings, SettingsError

P0, P1 = TopicPartition("posts", 0), TopicPartition("posts", 1)


class OverlapCaptioner(FakeCaptioner):
    """Its first generation waits up to ``patience`` s for the next batch's images to be encoded."""

    def __init__(self, patience: float) -> None:
        super().__init__()
        self.patience, self.encodes = patience, 0
        self.next_encoded = threading.Event()
        self.overlapped: bool | None = None
        self.on_first_generation = lambda: None

    def encode_images(self, images):
        self.encodes += 1
        if self.encodes == 2:
            self.next_encoded.set()
        return super().encode_images(images)

    def caption(self, images, keywords, num_captions=3):
        if self.overlapped is None:
            self.overlapped = self.next_encoded.wait(self.patience)
            self.on_first_generation()
        return super().caption(images, keywords, num_captions)


@pytest.mark.parametrize(("depth", "overlaps"), [(1, True), (0, False)])
def test_the_next_batch_is_prepared_while_one_generates_unless_pipelining_is_off(depth, overlaps):
    captioner = OverlapCaptioner(patience=5 if overlaps else 0.5)
    loop, _, consumer, producer, _ = make_loop(captioner, records(4), batch_size=2, pipeline_depth=depth)
    loop.run()
    assert captioner.overlapped is overlaps
    assert consumer.committed == {P0: 4} and len(producer.sent) == 4


class JournalCaptioner(FakeCaptioner):
    def __init__(self, journal: list[str]) -> None:
        super().__init__()
        self.journal = journal

    def encode_images(self, images):
        self.journal.append("encode")
        return super().encode_images(images)


class CommitHistory(FakeConsumer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.history: list[int] = []

    def commit(self, offsets):
        super().commit(offsets)
        self.history.append(offsets[P0].offset)


def test_each_batch_is_folded_then_committed_before_the_next_reads_its_profiles():
    loop, journal, consumer, _, store = make_loop(FakeCaptioner(), records(6), batch_size=2, consumer_class=CommitHistory)
    loop.processor.captioner = JournalCaptioner(journal)
    loop.run()

    def at(entry: str) -> list[int]:
        return [i for i, e in enumerate(journal) if e == entry]

    encodes, reads, folds, commits = at("encode"), at("read_profiles"), at("add_posts"), at("commit")
    assert len(encodes) == len(reads) == len(folds) == len(commits) == 3
    assert consumer.history == [2, 4, 6]  # in batch order, never past a batch not yet folded
    for n in range(3):
        assert reads[n] < folds[n] < commits[n]
    for n in range(2):
        assert commits[n] < reads[n + 1]  # batch n+1 reads its profiles only after batch n's fold and commit
    assert [p.post_id for p in store.posts] == [f"p{i}" for i in range(6)]


class FailingOnSecondRead(JournalStore):
    def top_keywords(self, user_ids, k):
        if self.journal.count("read_profiles") == 1:
            raise DatabaseUnavailable("database gone")
        return super().top_keywords(user_ids, k)


def test_a_failure_while_batch_n_generates_commits_neither_it_nor_the_batch_prepared_after_it():
    captioner = OverlapCaptioner(patience=5)
    loop, journal, consumer, _, _ = make_loop(captioner, records(6), batch_size=2)
    loop.store = loop.processor.keywords = FailingOnSecondRead(journal)
    with pytest.raises(DatabaseUnavailable):
        loop.run()
    assert captioner.encodes == 3  # batches 2 and 3 were in hand when batch 2 failed
    assert consumer.committed == {P0: 2} and journal.count("commit") == 1  # batch 1 only
    assert journal[-2:] == ["consumer.close", "producer.close"] and consumer.closed_with_autocommit is False


def test_a_stop_finishes_and_commits_both_batches_in_hand():
    captioner = OverlapCaptioner(patience=5)
    loop, _, consumer, producer, _ = make_loop(captioner, records(6), batch_size=2)
    captioner.on_first_generation = loop.stop  # batch 1 generating, batch 2 prepared, batch 3 not polled
    loop.run()
    assert captioner.overlapped is True
    assert consumer.committed == {P0: 4} and len(producer.sent) == 4


class RebalancingConsumer(FakeConsumer):
    """Partitions with fetch positions and one rebalance in the second poll, made while batch 1 generates:
    ``revoked`` are given up, partitions newly ``assigned`` start from their committed offsets
    (as kafka-python resets them), kept ones go on from their position."""

    plan: tuple[set[TopicPartition], set[TopicPartition]] = (set(), set())

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.all = list(self.records)
        self.owned = {TopicPartition(r.topic, r.partition) for r in self.all}
        self.positions = {tp: 0 for tp in self.owned}
        self.polls, self.empty_polls = 0, 0
        self.rebalanced = threading.Event()

    def subscribe(self, topics, listener=None):
        self.listener = listener
        listener.on_partitions_assigned(set(self.owned))

    def poll(self, timeout_ms=0, max_records=None):
        self.polls += 1
        if self.polls == 2:
            revoked, assigned = self.plan
            self.listener.on_partitions_revoked(revoked)
            new = assigned - (self.owned - revoked)
            self.owned = assigned
            self.positions.update({tp: self.committed.get(tp, 0) for tp in new})
            self.listener.on_partitions_assigned(new)
            self.rebalanced.set()
        polled: dict[TopicPartition, list] = {}
        for tp in sorted(self.owned):
            ready = [r for r in self.all if (r.topic, r.partition) == tp and r.offset >= self.positions[tp]]
            ready = ready[: max_records - sum(map(len, polled.values()))]
            if ready:
                polled[tp] = ready
                self.positions[tp] = ready[-1].offset + 1
        self.empty_polls = 0 if polled else self.empty_polls + 1
        if self.empty_polls == 2:
            self.stop.set()
        return polled

    def seek(self, tp, offset):
        self.journal.append(f"seek:{tp.partition}:{offset}")
        self.positions[tp] = offset

    def assignment(self):
        return set(self.owned)


class GenerationWaitsForRebalance(FakeCaptioner):
    def __init__(self) -> None:
        super().__init__()
        self.consumer: RebalancingConsumer | None = None

    def caption(self, images, keywords, num_captions=3):
        if not self.calls:
            assert self.consumer.rebalanced.wait(5)
        return super().caption(images, keywords, num_captions)


def rebalanced_loop(stream, batch_size, plan):
    captioner = GenerationWaitsForRebalance()
    consumer_class = type("Planned", (RebalancingConsumer,), {"plan": plan})
    loop, journal, consumer, producer, store = make_loop(captioner, stream, batch_size=batch_size, consumer_class=consumer_class)
    captioner.consumer = consumer
    loop.run()
    sent = [json.loads(value)["post_id"] for topic, value, _ in producer.sent if topic == "out"]
    return captioner, journal, consumer, sent, [p.post_id for p in store.posts]


def test_a_batch_in_flight_when_its_partitions_are_revoked_is_dropped_and_replayed_from_the_commit():
    """Eager rebalancing (kafka-python's default): every partition is revoked, here assigned back at once."""
    captioner, journal, consumer, sent, folded = rebalanced_loop(records(4), 2, plan=({P0}, {P0}))
    assert len(captioner.calls) == 3  # batch 1 was generated, then dropped and generated again
    assert sent == folded == ["p0", "p1", "p2", "p3"]  # each post sent and folded once: nothing of batch 1 went out
    assert consumer.committed == {P0: 4} and not any(e.startswith("seek") for e in journal)


def test_partitions_kept_by_a_dropped_batch_are_rewound_and_revoked_ones_left_alone():
    """Cooperative rebalancing: only partition 0 goes; partition 1 is read again from the dropped batch's start,
    and what the rebalancing poll fetched from it past that batch (q2) waits for its turn."""
    kept = [post_event(f"q{i}", "v", image_bytes=png_bytes(), text="other words") for i in range(3)]
    stream = records(2) + [InputRecord("posts", 1, i, value, key=b"v") for i, value in enumerate(kept)]
    captioner, journal, consumer, sent, folded = rebalanced_loop(stream, 4, plan=({P0}, {P1}))
    assert "seek:1:0" in journal
    assert sent == folded == ["q0", "q1", "q2"]  # partition 0's posts are the new owner's
    assert consumer.committed == {P1: 3}


def test_the_pipeline_depth_is_0_or_1():
    assert Settings().pipeline_depth == 1
    with pytest.raises(SettingsError, match="pipeline_depth"):
        Settings(pipeline_depth=2)


class Trickle(FakeConsumer):
    """One record per poll, as under light load."""

    def poll(self, timeout_ms=0, max_records=None):
        return super().poll(timeout_ms, 1)


class WaitsForTheStream(FakeCaptioner):
    """Its first generation lasts until the consumer has handed out every record (at most 2 s)."""

    def __init__(self) -> None:
        super().__init__()
        self.consumer: FakeConsumer | None = None

    def caption(self, images, keywords, num_captions=3):
        if not self.calls:
            for _ in range(200):
                if not self.consumer.records:
                    break
                threading.Event().wait(0.01)
        return super().caption(images, keywords, num_captions)


def test_under_light_load_the_next_batch_gathers_what_arrives_while_one_generates():
    """The linger does not cut the next batch while the model is busy: small batches would waste it."""
    captioner = WaitsForTheStream()
    loop, _, consumer, _, _ = make_loop(captioner, records(5), batch_size=10, linger_ms=0, consumer_class=Trickle)
    captioner.consumer = consumer
    loop.run()
    assert [size for size, _, _ in captioner.calls] == [1, 4]
    assert consumer.committed == {P0: 5}
