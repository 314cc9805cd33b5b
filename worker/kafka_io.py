"""kafka-python clients configured to work alike on Apache Kafka and the embedded Tansu broker.

The short session and heartbeat times make a group join take ~3 s instead of
~23 s (DESIGN.md section 7); acks='all' and manual commits are what the
at-least-once promise rests on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from worker.settings import Settings, default_of

log = logging.getLogger(__name__)

SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000


def make_consumer(bootstrap_servers: str, group_id: str | None, *, max_poll_records: int = 500, **extra):
    """A consumer that never commits on its own; the loop commits after outputs and profiles are durable."""
    config = dict(
        bootstrap_servers=bootstrap_servers.split(","),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        max_poll_records=max_poll_records,
        fetch_max_wait_ms=100,
        client_id="uapt-worker",
    )
    config.update(extra)
    return KafkaConsumer(**config)


def make_producer(bootstrap_servers: str, **extra):
    """A producer whose sends are acknowledged by all in-sync replicas."""
    config = dict(
        bootstrap_servers=bootstrap_servers.split(","),
        acks="all",
        linger_ms=5,
        retries=5,
        max_request_size=default_of("max_message_bytes"),
        client_id="uapt-worker",
    )
    config.update(extra)
    return KafkaProducer(**config)


def ensure_topics(
    bootstrap_servers: str, topics: Iterable[str], partitions: int, replication_factor: int = 1
) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), client_id="uapt-admin")
    try:
        existing = set(admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            try:
                admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=replication_factor) for t in missing]
                )
            except TopicAlreadyExistsError:
                log.info("another client created some of %s first", missing)
            log.info("created topics %s with %d partitions, replication %d", missing, partitions, replication_factor)
        return missing
    finally:
        admin.close()


def ensure_worker_topics(settings: Settings) -> list[str]:
    """Create the worker's input, output and dead-letter topics as its settings size them."""
    return ensure_topics(
        settings.bootstrap_servers,
        [settings.input_topic, settings.output_topic, settings.dlq_topic],
        settings.partitions,
        settings.replication_factor,
    )
