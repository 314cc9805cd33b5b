"""The consumer loop: poll a micro-batch, process it, then send and commit it through a `BatchCommit`.

The batch commit holds the at-least-once order of the README's data-flow diagram (flush,
fold profiles, commit offsets); the loop keeps the batching, the pipelining,
the metrics and the rebalance bookkeeping.

Pipelining (``pipeline_depth`` 1): while batch n finishes (keyword read,
generation) on a thread of its own, this thread polls batch n+1 and prepares
it (parse, images, image encoding). Batch n is then sent, folded and committed
here, and only then does batch n+1 finish: its profile read follows batch n's
fold and commits go in batch order, exactly as one batch at a time. Only this
thread touches the consumer (kafka-python's is not thread-safe).

Database outages: the profile store waits one out (worker/outages.py), on this
thread (the fold) or on the generate thread (the keyword read). Either way this
thread keeps polling, with every assigned partition paused, so kafka-python's
max_poll_interval_ms never lapses and the worker keeps its partitions; the
partitions are resumed at the next gathering of a batch.

Start-up: the service hands the loop a processor whose model is still loading
(a Future). The loop joins its group at once and holds its partitions, paused,
until the model is ready, so the broker's rebalance delay passes during the load
rather than after it.

Rebalances: kafka-python calls the listener on its own IO thread, inside
`poll`, where no commit may block; so the listener only notes the revoked
partitions and the loop acts after the poll. Records gathered for the next
batch from those partitions are dropped for their new owner to read from the
committed offset. A batch still in flight that holds one of them is dropped
whole (not sent, folded or committed), as its offsets can no longer be
committed; partitions of it that stay assigned (cooperative rebalancing only)
are rewound to its first offsets, so nothing is skipped. Without pipelining
every batch is committed before the next poll and nothing is in flight then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as StillRunning
from dataclasses import dataclass

from kafka import ConsumerRebalanceListener
from kafka.structs import TopicPartition

from profiles.errors import DatabaseUnavailable
from worker.commit import BatchCommit, PostSink
from worker.http import Readiness
from worker.metrics import WorkerMetrics
from worker.processing import BatchResult, PreparedBatch, Processor, Record
from worker.settings import Settings

log = logging.getLogger(__name__)

IDLE_POLL_MS = 500
BUSY_POLL_MS = 50  # polls while a batch is in flight stay short, so its commit is not held up by an idle topic
LAG_REFRESH_S = 1.0
HOLD_POLL_S = 0.5  # while the database is away: the longest the consumer goes without a poll
LOADING_POLL_S = 0.05  # while the model loads: short, so the first batch follows the load at once


class StopFlag:
    """A stop request that signal handlers may set: unlike threading.Event it takes no lock,
    so a second signal arriving inside the first handler cannot deadlock the process."""

    def __init__(self) -> None:
        self.requested = False

    def set(self) -> None:
        self.requested = True

    def is_set(self) -> bool:
        return self.requested


@dataclass
class _Batch:
    """A batch in hand: its records, prepared; ``result`` once it is finishing."""

    records: list[Record]
    prepared: PreparedBatch
    result: Future[BatchResult] | None = None

    def first_offsets(self) -> dict[TopicPartition, int]:
        """Where each of its partitions would be read again from."""
        first: dict[TopicPartition, int] = {}
        for record in self.records:
            tp = _partition_of(record)
            first[tp] = min(first.get(tp, record.offset), record.offset)
        return first


class WorkerLoop:
    """Runs until `stop()` (signal-safe); the batches in hand are always finished and committed first."""

    def __init__(
        self,
        settings: Settings,
        processor: Processor | Future[Processor],
        store: PostSink,
        consumer,
        producer,
        metrics: WorkerMetrics,
        readiness: Readiness,
        stop_flag: StopFlag | None = None,
    ) -> None:
        self.settings = settings
        self._loading = processor if isinstance(processor, Future) else None
        self.processor = None if isinstance(processor, Future) else processor
        self.store = store
        self.consumer = consumer
        self.producer = producer
        self.metrics = metrics
        self.readiness = readiness
        self._stopping = stop_flag or StopFlag()
        self._finisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uapt-generate")
        self._running: _Batch | None = None  # finishing on the generate thread
        self._ahead: _Batch | None = None  # prepared, waiting for the running batch's commit
        self._revoked: set[TopicPartition] = set()  # noted by the listener, acted on after the poll
        self._lag_refreshed = 0.0
        self._thread_id: int | None = None  # the thread that runs the loop: the only one to touch the consumer

    def stop(self) -> None:
        """Ask the loop to finish the batches in hand, commit them and return."""
        self._stopping.set()

    def run(self) -> None:
        self._thread_id = threading.get_ident()
        self.consumer.subscribe([self.settings.input_topic], listener=_Rebalance(self))
        try:
            if self._loading is not None:
                self._join_while_loading(self._loading)
            while True:
                if self._running is None and self._ahead is not None:
                    self._start()
                if self._ahead is None and self._may_gather():
                    batch = self._collect()
                    if batch:
                        if self._running is not None and not self._busy():
                            self._commit_running()  # its commit need not wait for this batch's images
                        self._ahead = self._prepare(batch)
                        continue
                if self._running is not None:
                    self._commit_running()
                    self._refresh_lag(self._in_hand(), force=True)  # a committed batch changes the lag at once
                elif self._stopping.is_set():
                    break
                else:
                    self._refresh_lag()
        except DatabaseUnavailable:
            if not self._stopping.is_set():
                raise
            log.warning("stopping while the database is unreachable; the batches in hand are replayed on restart")
        finally:
            self._finisher.shutdown(wait=False, cancel_futures=True)
            self.consumer.close(autocommit=False)
            self.producer.close(timeout=10)
        log.info("worker stopped cleanly")

    def _join_while_loading(self, loading: Future[Processor]) -> None:
        """Join the group and hold its partitions, paused, until the processor is ready or a stop comes.

        The group join waits out the broker's rebalance delay (3 s on the embedded one); done
        here it overlaps the model's imports and load instead of following them. A load
        that failed raises its error here.
        """
        while not loading.done() and not self._stopping.is_set():
            self._poll_paused(LOADING_POLL_S)
        if loading.done():
            self.processor = loading.result()

    def _may_gather(self) -> bool:
        """Poll for another batch: not when stopping, and only while one runs if pipelining."""
        return not self._stopping.is_set() and (self._running is None or self.settings.pipeline_depth > 0)

    def _collect(self) -> list[Record]:
        """Poll until the batch holds batch_size records or linger_ms passed since its first record,
        and, while a batch is in flight, until that one is done: the next batch is cut early only
        when full (a backlog, where preparing it ahead keeps the model busy); under lighter load it
        gathers what arrives while the one before generates, as without pipelining.

        With nothing polled yet it returns empty-handed after IDLE_POLL_MS, or as soon as the
        batch in flight is done, so that batch's commit never waits for new input.
        """
        size, linger_s = self.settings.batch_size, self.settings.linger_ms / 1000
        paused = self.consumer.paused()
        if paused:  # held through a database outage that is over now
            self.consumer.resume(*paused)
        pending: list[Record] = []
        deadline: float | None = None
        while len(pending) < size and not self._stopping.is_set():
            if deadline is None:
                timeout_ms = BUSY_POLL_MS if self._busy() else IDLE_POLL_MS
            else:
                timeout_ms = int((deadline - time.monotonic()) * 1000)
                if timeout_ms <= 0:
                    if not self._busy():
                        break
                    timeout_ms = BUSY_POLL_MS
            polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=size - len(pending))
            rewound = self._drop_revoked(pending)
            for records in polled.values():
                pending.extend(r for r in records if _partition_of(r) not in rewound)
            if deadline is None:
                if not pending:
                    if not self._busy():
                        break
                    continue
                deadline = time.monotonic() + linger_s
        return pending

    def _busy(self) -> bool:
        """A batch is in flight and still finishing."""
        return self._running is not None and not self._running.result.done()

    def _prepare(self, records: list[Record]) -> _Batch:
        self.metrics.events_consumed.inc(len(records))
        self.metrics.batch_size.observe(len(records))
        self.metrics.batch_started()
        self._refresh_lag([*self._in_hand(), *records])
        return _Batch(records, self.processor.prepare(records))

    def _start(self) -> None:
        """Hand the prepared batch to the generate thread; the batch before it is committed."""
        batch, self._ahead = self._ahead, None
        batch.result = self._finisher.submit(self.processor.finish, batch.prepared)
        self._running = batch

    def _commit_running(self) -> None:
        """Wait for the running batch, then send, fold and commit it (the batch commit's order)."""
        batch = self._running
        try:
            result = self._finished(batch.result)
            commit = BatchCommit(self.consumer, self.producer, self.store, self.settings, result.stage_seconds)
            commit.send(batch.records, result)
            produced_at_ms = commit.commit()
        finally:
            self._running = None
            self.metrics.batch_finished()
        self._observe(result, produced_at_ms)
        log.debug(
            "batch of %d: %d captions, %d dead letters", len(batch.records), len(result.outputs), len(result.dead_letters)
        )

    def _finished(self, result: Future[BatchResult]) -> BatchResult:
        """The batch's result; while the generate thread waits out a database outage, this thread holds the partitions."""
        while True:
            try:
                return result.result(timeout=HOLD_POLL_S)
            except StillRunning:
                if not self.readiness.database_reachable:
                    self._poll_paused(0.0)

    def wait_in_group(self, seconds: float) -> None:
        """The profile store's wait during an outage (`DatabaseWatch.sleep`): on this thread, polling with
        every partition paused, so the consumer stays in its group; on any other thread, a plain sleep
        (this thread polls meanwhile, in `_finished`)."""
        if threading.get_ident() != self._thread_id:
            time.sleep(seconds)
            return
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._poll_paused(min(left, HOLD_POLL_S))

    def _poll_paused(self, seconds: float) -> None:
        """Poll for ``seconds`` with every assigned partition paused: the group sees a live member, no record is taken."""
        assigned = self.consumer.assignment()
        if assigned - self.consumer.paused():
            self.consumer.pause(*assigned)
        polled = self.consumer.poll(timeout_ms=int(seconds * 1000))
        for tp, records in polled.items():  # a partition assigned during this poll was not paused yet
            self.consumer.seek(tp, min(r.offset for r in records))

    def _in_hand(self) -> list[Record]:
        return [r for batch in (self._running, self._ahead) if batch is not None for r in batch.records]

    def _drop_revoked(self, pending: list[Record]) -> set[TopicPartition]:
        """Give up the work in hand of the partitions revoked in the last poll; returns the partitions rewound.

        ``pending`` (records gathered for the next batch) loses the records of revoked and rewound partitions.
        """
        revoked, self._revoked = self._revoked, set()
        if not revoked:
            return set()
        for tp in revoked:
            self.metrics.forget_partition(tp.topic, tp.partition)
        rewound: dict[TopicPartition, int] = {}
        running = self._running
        if running is not None and not revoked.isdisjoint(running.first_offsets()):
            log.warning("partitions revoked while their batch of %d was in flight; dropping it", len(running.records))
            self._running = None
            self.metrics.batch_finished()
            rewound = {tp: offset for tp, offset in running.first_offsets().items() if tp not in revoked}
            for tp, offset in rewound.items():
                self.consumer.seek(tp, offset)
        gone = revoked | rewound.keys()
        pending[:] = [r for r in pending if _partition_of(r) not in gone]
        return set(rewound)

    def _observe(self, result: BatchResult, produced_at_ms: float) -> None:
        """Count a committed batch's captions, erasures, failures and abstentions, and observe its latencies, scores and stage times."""
        self.metrics.captions_produced.inc(len(result.outputs))
        self.metrics.erasures.inc(len(result.forgets))
        for reason, count in result.failures.items():
            self.metrics.failures.labels(reason=reason).inc(count)
        for output in result.outputs:
            self.metrics.end_to_end_seconds.observe(max(0.0, produced_at_ms - output.event_timestamp_ms) / 1000)
        self.metrics.observe_stages(result.stage_seconds)
        self.metrics.observe_judgements(result.abstentions, result.ood_scores, result.confidences)

    def _refresh_lag(self, in_progress: Sequence[Record] = (), *, force: bool = False) -> None:
        """Publish each partition's lag from the consumer's own fetch state (no broker request).

        The records of the batches ``in_progress`` count as lag until they are committed, so the
        gauge does not read 0 while a batch hangs (``uapt_batch_age_seconds`` says for how long).
        """
        now = time.monotonic()
        if not (force or in_progress) and now - self._lag_refreshed < LAG_REFRESH_S:
            return
        self._lag_refreshed = now
        uncommitted: dict[TopicPartition, int] = {}  # first offset in progress, per partition
        for record in in_progress:
            tp = _partition_of(record)
            uncommitted[tp] = min(uncommitted.get(tp, record.offset), record.offset)
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                first = uncommitted.get(tp)
                self.metrics.set_lag(tp.topic, tp.partition, highwater - (self.consumer.position(tp) if first is None else first))

    def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Runs on kafka-python's IO thread while this loop waits in poll: only note the partitions."""
        self._revoked |= revoked

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.readiness.consumer_assigned = True
        log.info("assigned partitions %s", sorted((tp.topic, tp.partition) for tp in assigned))


def _partition_of(record: Record) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: WorkerLoop) -> None:
        self.loop = loop

    def on_partitions_revoked(self, revoked) -> None:
        self.loop._on_revoked(set(revoked))

    def on_partitions_assigned(self, assigned) -> None:
        self.loop._on_assigned(set(assigned))
