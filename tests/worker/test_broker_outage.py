"""Kafka goes away mid-stream: the broker process is frozen (SIGSTOP) for longer than the consumer's
session timeout, then thawed. The worker keeps running, says not-ready and counts the outage meanwhile,
and afterwards every post is captioned and folded once."""

from __future__ import annotations

import dataclasses
import signal
import time
import uuid

import pytest
from test_db_outage import BEFORE, DURING, assert_profiles_equal_a_rebuild, readyz, wait_not_ready
from test_stream import scrape
from worker_samples import captions_by_post, publish, read_topic, running_worker, wait_ready

from worker.broker import EmbeddedBroker
from worker.kafka_io import SESSION_TIMEOUT_MS, ensure_topics
from worker.kafka_security import KafkaSecurity

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # about a minute; CI runs it

FROZEN_S = SESSION_TIMEOUT_MS / 1000 * 2  # the group coordinator gives the member up meanwhile


def test_the_worker_waits_out_a_frozen_broker(worker_settings, fake_captioner, tmp_path):
    with EmbeddedBroker() as broker:
        settings = dataclasses.replace(worker_settings, bootstrap_servers=broker.bootstrap_servers, group_id=f"g-{uuid.uuid4().hex[:8]}")
        ensure_topics(
            broker.bootstrap_servers,
            [settings.input_topic, settings.output_topic, settings.dlq_topic],
            partitions=4,
            security=KafkaSecurity(),
        )
        with running_worker(settings, fake_captioner) as info:  # asserts a clean exit 0 at the end
            port = info["port"]
            wait_ready(port)
            publish(broker.bootstrap_servers, settings.input_topic, BEFORE)
            read_topic(broker.bootstrap_servers, settings.output_topic, until=lambda r: len(captions_by_post(r)) >= 6)

            publish(broker.bootstrap_servers, settings.input_topic, DURING)  # in flight as the broker stops
            broker.process.send_signal(signal.SIGSTOP)
            try:
                frozen_at = time.monotonic()
                assert "broker_reachable=False" in wait_not_ready(port, timeout_s=FROZEN_S)
                time.sleep(max(0.0, FROZEN_S - (time.monotonic() - frozen_at)))
                assert readyz(port)[0] == 503
            finally:
                broker.process.send_signal(signal.SIGCONT)

            wait_ready(port, timeout_s=90)
            outputs = read_topic(
                broker.bootstrap_servers, settings.output_topic, until=lambda r: len(captions_by_post(r)) >= 12, timeout_s=90
            )
            metrics = scrape(port)

    assert set(captions_by_post(outputs)) == {f"a{i}" for i in range(6)} | {f"b{i}" for i in range(6)}
    assert metrics[("uapt_broker_outages_total", ())] >= 1
    assert_profiles_equal_a_rebuild(settings.database_url, tmp_path)
