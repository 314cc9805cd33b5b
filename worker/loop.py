"""The consumer loop: poll a micro-batch, process it, then send and commit it through a `Checkpoint`.

The checkpoint holds the at-least-once order of DESIGN.md section 2 (flush,
fold profiles, commit offsets); the loop keeps the batching, the metrics and
the rebalance bookkeeping.

Rebalances: every processed batch is committed before the next poll, and
rebalance callbacks only run inside poll, so when partitions are revoked there is
nothing processed left to commit; records still being gathered for the next
batch are dropped for the new owner to read from the committed offset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from kafka import ConsumerRebalanceListener
from kafka.structs import TopicPartition

from profiles.errors import DatabaseUnavailable
from worker.checkpoint import Checkpoint, PostSink
from worker.http import Readiness
from worker.metrics import WorkerMetrics
from worker.processing import BatchResult, Processor, Record
from worker.settings import Settings

log = logging.getLogger(__name__)

IDLE_POLL_MS = 500
LAG_REFRESH_S = 1.0


class StopFlag:
    """A stop request that signal handlers may set: unlike threading.Event it takes no lock,
    so a second signal arriving inside the first handler cannot deadlock the process."""

    def __init__(self) -> None:
        self.requested = False

    def set(self) -> None:
        self.requested = True

    def is_set(self) -> bool:
        return self.requested


class WorkerLoop:
    """Runs until `stop()` (signal-safe); the batch in hand is always finished and committed first."""

    def __init__(
        self,
        settings: Settings,
        processor: Processor,
        store: PostSink,
        consumer,
        producer,
        metrics: WorkerMetrics,
        readiness: Readiness,
        stop_flag: StopFlag | None = None,
    ) -> None:
        self.settings = settings
        self.processor = processor
        self.store = store
        self.consumer = consumer
        self.producer = producer
        self.metrics = metrics
        self.readiness = readiness
        self._stopping = stop_flag or StopFlag()
        self._pending: list[Record] = []
        self._lag_refreshed = 0.0

    def stop(self) -> None:
        """Ask the loop to finish its current batch, commit and return."""
        self._stopping.set()

    def run(self) -> None:
        self.consumer.subscribe([self.settings.input_topic], listener=_Rebalance(self))
        try:
            while not self._stopping.is_set():
                batch = self._collect()
                if batch:
                    try:
                        self._handle(batch)
                    except DatabaseUnavailable:
                        if not self._stopping.is_set():
                            raise
                        log.warning("stopping while the database is unreachable; the batch is replayed on restart")
                        break
                self._refresh_lag(force=bool(batch))  # a committed batch changes the lag at once
        finally:
            self.consumer.close(autocommit=False)
            self.producer.close(timeout=10)
        log.info("worker stopped cleanly")

    def _collect(self) -> list[Record]:
        """Poll until the batch holds batch_size records or linger_ms passed since its first record."""
        size, linger_s = self.settings.batch_size, self.settings.linger_ms / 1000
        self._pending = []
        deadline: float | None = None
        while len(self._pending) < size and not self._stopping.is_set():
            if deadline is None:
                timeout_ms = IDLE_POLL_MS
            else:
                timeout_ms = int((deadline - time.monotonic()) * 1000)
                if timeout_ms <= 0:
                    break
            polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=size - len(self._pending))
            for records in polled.values():
                self._pending.extend(records)
            if deadline is None:
                if not self._pending:
                    break
                deadline = time.monotonic() + linger_s
        return self._pending

    def _handle(self, batch: Sequence[Record]) -> None:
        self.metrics.events_consumed.inc(len(batch))
        self.metrics.batch_size.observe(len(batch))
        self._refresh_lag(in_progress=batch)
        self.metrics.batch_started()
        try:
            result = self.processor.process_batch(batch)
            checkpoint = Checkpoint(self.consumer, self.producer, self.store, self.settings, result.stage_seconds)
            checkpoint.send(batch, result)
            produced_at_ms = checkpoint.commit()
        finally:
            self.metrics.batch_finished()
        self._observe(result, produced_at_ms)
        log.debug("batch of %d: %d captions, %d dead letters", len(batch), len(result.outputs), len(result.dead_letters))

    def _observe(self, result: BatchResult, produced_at_ms: float) -> None:
        """Count a committed batch's captions, erasures and failures, and observe its latencies and stage times."""
        self.metrics.captions_produced.inc(len(result.outputs))
        self.metrics.erasures.inc(len(result.forgets))
        for reason, count in result.failures.items():
            self.metrics.failures.labels(reason=reason).inc(count)
        for output in result.outputs:
            self.metrics.end_to_end_seconds.observe(max(0.0, produced_at_ms - output.event_timestamp_ms) / 1000)
        self.metrics.observe_stages(result.stage_seconds)

    def _refresh_lag(self, in_progress: Sequence[Record] = (), *, force: bool = False) -> None:
        """Publish each partition's lag from the consumer's own fetch state (no broker request).

        The records of a batch ``in_progress`` count as lag until it is committed, so the gauge
        does not read 0 while a batch hangs (``uapt_batch_age_seconds`` says for how long).
        """
        now = time.monotonic()
        if not (force or in_progress) and now - self._lag_refreshed < LAG_REFRESH_S:
            return
        self._lag_refreshed = now
        uncommitted: dict[TopicPartition, int] = {}  # first offset of the batch, per partition
        for record in in_progress:
            tp = TopicPartition(record.topic, record.partition)
            uncommitted[tp] = min(uncommitted.get(tp, record.offset), record.offset)
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                first = uncommitted.get(tp)
                self.metrics.set_lag(tp.topic, tp.partition, highwater - (self.consumer.position(tp) if first is None else first))

    def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Drop not-yet-processed records of partitions we lose: their new owner will read them."""
        self._pending[:] = [r for r in self._pending if TopicPartition(r.topic, r.partition) not in revoked]
        for tp in revoked:
            self.metrics.forget_partition(tp.topic, tp.partition)

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.readiness.consumer_assigned = True
        log.info("assigned partitions %s", sorted((tp.topic, tp.partition) for tp in assigned))


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: WorkerLoop) -> None:
        self.loop = loop

    def on_partitions_revoked(self, revoked) -> None:
        self.loop._on_revoked(set(revoked))

    def on_partitions_assigned(self, assigned) -> None:
        self.loop._on_assigned(set(assigned))
