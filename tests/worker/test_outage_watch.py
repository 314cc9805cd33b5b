"""The worker's side of a database outage, with fakes: readiness, metrics, and a stop while waiting."""

import time

from loop_fakes import JournalStore, make_loop, records
from sqlalchemy.exc import OperationalError

from profiles.errors import DatabaseUnavailable
from worker.http import Readiness
from worker.loop import StopFlag
from worker.metrics import WorkerMetrics
from worker.outages import DatabaseWatch

REFUSED = OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


def sample(metrics: WorkerMetrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_the_worker_is_not_ready_while_the_database_is_away_and_counts_the_wait():
    readiness, metrics, stop = Readiness(model_loaded=True, consumer_assigned=True), WorkerMetrics(), StopFlag()
    watch = DatabaseWatch(readiness, metrics, stop)
    assert readiness.ready

    assert watch.waiting("write", REFUSED, 0.05) is True
    assert not readiness.ready and not readiness.database_reachable
    time.sleep(0.05)
    assert watch.waiting("write", REFUSED, 0.1) is True
    time.sleep(0.05)
    watch.recovered("write")

    assert readiness.ready
    assert sample(metrics, "uapt_db_retries_total", operation="write") == 2
    assert sample(metrics, "uapt_db_retries_total", operation="read") == 0  # the series exists from the start
    assert 0.1 <= sample(metrics, "uapt_db_wait_seconds_total") < 1.0


def test_a_stop_ends_the_wait():
    stop = StopFlag()
    watch = DatabaseWatch(Readiness(), WorkerMetrics(), stop)
    stop.set()
    assert watch.waiting("read", REFUSED, 0.1) is False


class StoreGoneWhileStopping(JournalStore):
    """The fold gives up waiting for the database because a stop was asked for meanwhile."""

    def __init__(self) -> None:
        super().__init__([])
        self.stop_loop = lambda: None

    def add_posts(self, posts):
        self.journal.append("add_posts")
        self.stop_loop()  # SIGTERM arrives during the outage; the store's listener then says stop waiting
        raise DatabaseUnavailable("database unavailable (write): connection refused")


def test_a_stop_during_an_outage_ends_the_loop_without_committing(fake_captioner):
    store = StoreGoneWhileStopping()
    loop, journal, consumer, _, _ = make_loop(fake_captioner, records(2), store=store)
    store.journal, store.stop_loop = journal, loop.stop
    loop.run()  # returns: no exception, no commit
    assert journal[-3:] == ["add_posts", "consumer.close", "producer.close"]
    assert "commit" not in journal and consumer.committed == {}
