"""The worker's side of a Kafka outage: noticed, shown on /readyz and counted, while the loop waits it out.

The consumer and producer ride out a broker that stops answering on their own
(requests time out and are retried, the group is joined again), but nothing
in kafka-python says so to the outside. A probe on a thread of its own asks the
cluster for its description every few seconds with a short timeout; while that
fails /readyz answers 503 with ``broker_reachable=False``, and each outage adds
one to ``uapt_broker_outages_total``. The probe only watches: it never holds up
the loop, which keeps polling (and so keeps its place in the group when the
broker comes back).
"""

from __future__ import annotations

import logging
import threading
from kafka.errors import KafkaError

from worker.http import Readiness
from worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 2.0
PROBE_TIMEOUT_MS = 3000  # a broker that takes longer than this to describe the cluster is taken for gone


class BrokerWatch:
    """Probes the cluster with ``admin`` (a client of its own, kept for the worker's life) until `stop`.

    One client throughout: it reconnects by itself when the broker is back, whereas a kafka-python
    admin client that fails its bootstrap leaves its IO thread behind, so making one per try would
    leak a thread every few seconds of an outage.
    """

    def __init__(self, admin, readiness: Readiness, metrics: WorkerMetrics, interval_s: float = PROBE_INTERVAL_S) -> None:
        self._admin = admin
        self._readiness = readiness
        self._metrics = metrics
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="uapt-broker-watch", daemon=True)

    def start(self) -> BrokerWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=PROBE_TIMEOUT_MS / 1000 + self._interval_s + 1)
        self._admin.close()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            try:
                self._admin.describe_cluster()
            except (KafkaError, OSError) as error:
                self._down(error)
            else:
                self._up()

    def _down(self, error: Exception) -> None:
        if self._readiness.broker_reachable:
            self._readiness.broker_reachable = False
            self._metrics.broker_outages.inc()
            log.warning("Kafka is not answering (%s); the worker waits for it", type(error).__name__)

    def _up(self) -> None:
        if not self._readiness.broker_reachable:
            self._readiness.broker_reachable = True
            log.info("Kafka answers again")
