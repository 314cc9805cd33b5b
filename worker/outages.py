"""The worker's side of a database outage: not ready, counted, and waited out until a stop is asked for.

The profile store retries while its database is unreachable (profiles/outages.py)
and asks this listener before each wait. Nothing is committed meanwhile: the
batch commit commits offsets only after the profile write succeeded. The waits
themselves go through the loop (`WorkerLoop.wait_in_group`), which keeps
polling its consumer with every partition paused, so that an outage longer than
the consumer's max_poll_interval_ms does not cost the worker its partitions.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.exc import DBAPIError

from worker.http import Readiness
from worker.metrics import WorkerMetrics


class DatabaseWatch:
    """An `OutageListener` for the store: /readyz says not ready while the database is away,
    ``uapt_db_retries_total`` counts the retries and ``uapt_db_wait_seconds_total`` the time lost."""

    def __init__(self, readiness: Readiness, metrics: WorkerMetrics, stop_flag) -> None:
        self._readiness = readiness
        self._metrics = metrics
        self._stop = stop_flag
        self._last: float | None = None  # when the outage's time was last added to the counter
        self.wait_in_group: Callable[[float], None] = time.sleep  # the loop puts in one that keeps polling Kafka

    def waiting(self, operation: str, error: DBAPIError, delay_s: float) -> bool:
        """Mark the worker not ready and count the retry; False (stop waiting) once a stop is asked for."""
        self._readiness.database_reachable = False
        self._add_waited()
        if self._stop.is_set():
            return False
        self._metrics.db_retries.labels(operation=operation).inc()
        return True

    def sleep(self, seconds: float) -> None:
        self.wait_in_group(seconds)

    def recovered(self, operation: str) -> None:
        self._add_waited()
        self._last = None
        self._readiness.database_reachable = True

    def _add_waited(self) -> None:
        now = time.monotonic()
        if self._last is not None:
            self._metrics.db_wait_seconds.inc(now - self._last)
        self._last = now
