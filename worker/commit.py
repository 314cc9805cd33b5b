"""One batch's commit (a checkpoint in Quix Streams' sense): its pending sends, the posts to fold, the offsets to commit.

`BatchCommit.commit` is the at-least-once order of the README's data-flow diagram and
nothing else: flush the producer until every caption and dead letter is
acknowledged, fold the batch's posts into the profiles in one transaction, then
commit the consumed offsets. An error in a step skips the steps after it, so
the offsets stay where they were and the batch is replayed; the store's
idempotence by post_id keeps a replay from counting a post twice.

A batch with forget events folds in record order instead: the posts before a
forget, the erasure, the posts after it, one transaction each. A replay redoes
that whole sequence and ends in the same state: posts erased before the crash
are folded and erased again, later ones are skipped or folded once, and erasing
is idempotent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping, Sequence
from typing import Protocol

from kafka.errors import CommitFailedError, MessageSizeTooLargeError
from kafka.structs import OffsetAndMetadata, TopicPartition

from profiles import Post
from worker.dlq import DeadLetter
from worker.processing import BatchResult, PendingForget, Record
from worker.settings import Settings
from worker.stages import Stage, timed

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 30


class Acknowledgement(Protocol):
    """What a producer's send returns (kafka-python's FutureRecordMetadata fits)."""

    def get(self, timeout: float | None = None) -> object: ...


class PostSink(Protocol):
    """Where posts are folded and users forgotten (the profile store): idempotent, one transaction per call."""

    def add_posts(self, posts: Sequence[Post]) -> int: ...

    def forget_user(self, user_id: str) -> object: ...


class BatchCommit:
    """A batch from its first send to its offset commit; the loop makes one per batch.

    ``stage_seconds`` is the batch's timing table: the commit adds the
    ``produce`` and ``profile_write`` stages to it.
    """

    def __init__(
        self, consumer, producer, store: PostSink, settings: Settings, stage_seconds: MutableMapping[Stage, float]
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._store = store
        self._settings = settings
        self._stage_seconds = stage_seconds
        self._sent: list[Acknowledgement] = []  # one per caption message
        self._letters: list[tuple[DeadLetter, Acknowledgement]] = []
        self._posts: list[Post] = []
        self._forgets: list[PendingForget] = []
        self._offsets: dict[TopicPartition, int] = {}  # next offset to read, per partition

    def send(self, records: Sequence[Record], result: BatchResult) -> None:
        """Start sending the batch's captions and dead letters; keep its posts and offsets for `commit`."""
        with timed(self._stage_seconds, Stage.PRODUCE):
            self._sent = [
                self._producer.send(self._settings.output_topic, key=out.key, value=out.value)
                for out in result.outputs
            ]
            self._letters = [(letter, self._send_dead_letter(letter)) for letter in result.dead_letters]
        self._posts = result.posts
        self._forgets = result.forgets
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            self._offsets[tp] = max(self._offsets.get(tp, 0), record.offset + 1)

    def commit(self) -> float:
        """Make the batch durable, each step only once the one before it succeeded.

        Returns when the sends were acknowledged (epoch ms): where the batch's end-to-end latency ends.
        """
        with timed(self._stage_seconds, Stage.PRODUCE):
            self._flush()  # 1. every send acknowledged, or this raises
        produced_at_ms = time.time() * 1000
        with timed(self._stage_seconds, Stage.PROFILE_WRITE):
            self._fold()  # 2. one transaction (more with forgets); posts already folded are skipped
        self._commit_offsets()  # 3. past the batch
        return produced_at_ms

    def _fold(self) -> None:
        """Fold the posts and apply the forgets in record order: each forget after the posts that precede it."""
        folded = 0
        for forget in self._forgets:
            if forget.after_posts > folded:
                self._store.add_posts(self._posts[folded : forget.after_posts])
                folded = forget.after_posts
            self._store.forget_user(forget.user_id)
        if folded < len(self._posts):
            self._store.add_posts(self._posts[folded:])

    def _flush(self) -> None:
        """Wait for every send; re-raise a failed one, so nothing is folded or committed and the batch is replayed."""
        self._producer.flush()
        for future in self._sent:
            future.get(timeout=ACK_TIMEOUT_S)
        for letter, future in self._letters:
            try:
                future.get(timeout=ACK_TIMEOUT_S)
            except MessageSizeTooLargeError:  # the broker's limit is below the input's size plus headers
                self._send_dead_letter(letter.without_value()).get(timeout=ACK_TIMEOUT_S)

    def _send_dead_letter(self, letter: DeadLetter) -> Acknowledgement:
        """Send a dead letter; one too large for the producer goes without its value, so it cannot block the stream."""
        topic = self._settings.dlq_topic
        try:
            return self._producer.send(topic, key=letter.key, value=letter.value, headers=letter.headers)
        except MessageSizeTooLargeError:
            log.warning("dead letter of %d bytes is over the message limit; sending its headers only", len(letter.value or b""))
            letter = letter.without_value()
            return self._producer.send(topic, key=letter.key, value=letter.value, headers=letter.headers)

    def _commit_offsets(self) -> None:
        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self._offsets.items()}
        try:
            self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced mid-batch; the new owner replays it (outputs may repeat, profiles do not).
            log.warning("offset commit failed after a rebalance, the batch will be replayed: %s", exc)
