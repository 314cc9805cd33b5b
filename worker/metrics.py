"""Prometheus metrics of one worker, in a registry of its own (so tests can run several)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from model.guidance.abstention import REASONS
from worker.reasons import Reason
from worker.stages import Stage

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
OOD_SCORE_BUCKETS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0)  # cosine distances (model.guidance.ood)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
DB_OPERATIONS = ("open", "read", "write")  # the profile store's operation labels (profiles/store.py)


class WorkerMetrics:
    """Counters, histograms and gauges the worker loop updates; `render()` gives the /metrics text."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter("uapt_events_consumed", "Input events consumed", registry=r)
        self.captions_produced = Counter("uapt_captions_produced", "Caption messages produced", registry=r)
        self.failures = Counter("uapt_failures", "Events sent to the dead-letter topic, by reason", ["reason"], registry=r)
        self.stage_seconds = Histogram(
            "uapt_stage_seconds", "Time per batch spent in each stage", ["stage"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.end_to_end_seconds = Histogram(
            "uapt_end_to_end_seconds",
            "From the input event's timestamp to its caption being produced",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram("uapt_batch_size", "Events per micro-batch", buckets=BATCH_BUCKETS, registry=r)
        self.consumer_lag = Gauge(
            "uapt_consumer_lag", "Events behind the partition's end (clamped at 0)", ["topic", "partition"], registry=r
        )
        self.model_info = Info("uapt_model", "The captioning model this worker serves", registry=r)
        self.erasures = Counter("uapt_erasures", "Users erased from the profile store by uapt.forget/1 events", registry=r)
        self.ready = Gauge("uapt_ready", "1 while /readyz answers 200, else 0 (set by run_worker)", registry=r)
        self._batches_started: deque[float] = deque()  # time.monotonic() of each batch in hand, oldest first
        self.batch_age = Gauge(
            "uapt_batch_age_seconds",
            "How long the oldest batch in progress has been running (0 between batches)",
            registry=r,
        )
        self.batch_age.set_function(self._batch_age)  # computed at scrape time: true even while a batch hangs
        self.db_retries = Counter(
            "uapt_db_retries", "Profile-store operations retried because the database was unreachable", ["operation"], registry=r
        )
        self.db_wait_seconds = Counter(
            "uapt_db_wait_seconds", "Time spent waiting for an unreachable profile database", registry=r
        )
        self.broker_outages = Counter(
            "uapt_broker_outages", "Times Kafka stopped answering the worker's probe (worker/broker_watch.py)", registry=r
        )
        self.abstentions = Counter(
            "uapt_abstentions", "Posts published without captions (abstained), by reason", ["reason"], registry=r
        )
        self.ood_score = Histogram(
            "uapt_ood_score", "Out-of-distribution score of each scored post's image", buckets=OOD_SCORE_BUCKETS, registry=r
        )
        self.confidence = Histogram(
            "uapt_caption_confidence", "Confidence of each scored post's best caption", buckets=CONFIDENCE_BUCKETS, registry=r
        )
        for reason in REASONS:
            self.abstentions.labels(reason=reason)
        for operation in DB_OPERATIONS:
            self.db_retries.labels(operation=operation)
        for stage in Stage:  # every stage's and reason's series exists from the start, at zero,
            self.stage_seconds.labels(stage=stage)
        for reason in Reason:  # so rate() and increase() see the first failure instead of a new series
            self.failures.labels(reason=reason)

    def observe_stages(self, seconds: Mapping[Stage, float]) -> None:
        for stage, value in seconds.items():
            self.stage_seconds.labels(stage=stage).observe(value)

    def observe_judgements(self, abstentions: Mapping[str, int], ood_scores: Sequence[float], confidences: Sequence[float]) -> None:
        for reason, count in abstentions.items():
            self.abstentions.labels(reason=reason).inc(count)
        for score in ood_scores:
            self.ood_score.observe(score)
        for confidence in confidences:
            self.confidence.observe(confidence)

    def batch_started(self) -> None:
        self._batches_started.append(time.monotonic())

    def batch_finished(self) -> None:
        """The oldest batch in hand is committed or dropped (batches end in the order they start)."""
        self._batches_started.popleft()

    def _batch_age(self) -> float:
        try:
            return time.monotonic() - self._batches_started[0]
        except IndexError:  # no batch in hand (or the last one ended while this read)
            return 0.0

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic=topic, partition=str(partition)).set(max(0, lag))

    def forget_partition(self, topic: str, partition: int) -> None:
        try:
            self.consumer_lag.remove(topic, str(partition))
        except KeyError:
            pass

    def render(self) -> bytes:
        return generate_latest(self.registry)
