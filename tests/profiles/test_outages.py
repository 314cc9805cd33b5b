"""Database outages are waited out; configurations that can never work are not: classification, backoff,
and a real PostgreSQL behind a proxy that the test cuts and restores."""

from __future__ import annotations

import sqlite3
import threading
import time

import psycopg
import pytest
from outage_proxy import CuttableProxy
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from profiles import Post
from profiles import outages
from profiles.errors import DatabaseUnavailable
from profiles.outages import is_misconfigured, is_unavailable, waiting_out_outages
from profiles.store import ProfileStore


def wrapped(orig: Exception, kind=OperationalError):
    return kind("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    "orig",
    [
        psycopg.OperationalError('connection failed: connection to server at "127.0.0.1", port 5432 failed: Connection refused'),
        psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg.errors.CannotConnectNow("the database system is starting up"),
    ],
)
def test_outages_are_worth_waiting_for(orig):
    assert is_unavailable(wrapped(orig)) and not is_misconfigured(wrapped(orig))


@pytest.mark.parametrize(
    "orig",
    [
        psycopg.OperationalError('connection failed: connection to server at "h", port 5432 failed: FATAL:  database "nodb" does not exist'),
        psycopg.OperationalError('connection failed: connection to server at "h", port 5432 failed: FATAL:  password authentication failed for user "u"'),
        psycopg.errors.InvalidPassword("any words: the class (SQLSTATE 28P01) decides"),
        psycopg.errors.InvalidCatalogName("3D000"),
        psycopg.errors.InvalidAuthorizationSpecification("28000"),
        psycopg.errors.InsufficientPrivilege("42501"),
    ],
)
def test_configurations_that_can_never_work_are_not_outages(orig):
    assert is_misconfigured(wrapped(orig)) and not is_unavailable(wrapped(orig))


def test_an_error_with_another_sqlstate_is_not_taken_for_a_refusal_by_its_words():
    admin_shutdown = psycopg.errors.AdminShutdown("FATAL:  terminating connection: database does not exist any more")
    assert not is_misconfigured(wrapped(admin_shutdown)) and is_unavailable(wrapped(admin_shutdown))


def test_a_host_name_that_does_not_resolve_is_a_mistake_not_an_outage():
    from profiles.database import check_host_resolves
    from profiles.errors import DatabaseMisconfigured

    with pytest.raises(DatabaseMisconfigured, match="database host 'no-such-host.invalid' does not resolve"):
        check_host_resolves("postgresql+psycopg://u@no-such-host.invalid:5432/db")
    check_host_resolves("postgresql+psycopg://u@127.0.0.1:5432/db")  # an address, and SQLite, need no name service
    check_host_resolves("sqlite:///profiles.db")


def test_faults_are_neither():
    for error in (wrapped(sqlite3.OperationalError("no such table: users")),
                  wrapped(psycopg.errors.UndefinedTable("relation does not exist"), ProgrammingError)):
        assert not is_unavailable(error) and not is_misconfigured(error)


class Listener:
    def __init__(self, keep_waiting: bool = True) -> None:
        self.keep_waiting = keep_waiting
        self.waits: list[tuple[str, float]] = []
        self.slept: list[float] = []
        self.recoveries: list[str] = []

    def waiting(self, operation, error, delay_s) -> bool:
        self.waits.append((operation, delay_s))
        return self.keep_waiting

    def sleep(self, seconds) -> None:  # the listener does the waiting: none here, so the tests run at once
        self.slept.append(seconds)

    def recovered(self, operation) -> None:
        self.recoveries.append(operation)


def failing(times: int, error: Exception):
    calls = []

    def attempt():
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "done"

    return attempt, calls


REFUSED = wrapped(psycopg.OperationalError("connection failed: Connection refused"))


def test_an_outage_is_retried_with_capped_exponential_backoff():
    attempt, calls = failing(12, REFUSED)
    listener = Listener()
    assert waiting_out_outages("write", attempt, listener, "db") == "done"
    slept = listener.slept  # the listener does each wait
    assert len(calls) == 13 and slept == [delay for _, delay in listener.waits]
    assert all(operation == "write" for operation, _ in listener.waits) and listener.recoveries == ["write"]
    assert slept[1] > slept[0] * 0.9 and max(slept) <= outages.MAX_DELAY_S  # grows, then stays under the cap
    assert slept[-1] >= outages.MAX_DELAY_S / 2


def test_a_listener_can_stop_the_wait_and_no_listener_never_waits():
    for listener in (Listener(keep_waiting=False), None):
        attempt, calls = failing(5, REFUSED)
        with pytest.raises(DatabaseUnavailable, match="unavailable \\(read\\).*Connection refused"):
            waiting_out_outages("read", attempt, listener, "db")
        assert len(calls) == 1


def test_a_fault_is_raised_at_once(monkeypatch):
    bug = wrapped(sqlite3.OperationalError("no such table: users"))
    attempt, calls = failing(5, bug)
    with pytest.raises(OperationalError, match="no such table"):
        waiting_out_outages("read", attempt, Listener(), "db")
    assert len(calls) == 1


@pytest.mark.integration
def test_store_waits_out_a_postgres_outage_and_loses_nothing(pg_schema_url):
    url = make_url(pg_schema_url())
    with CuttableProxy((url.host, url.port or 5432)) as proxy:
        listener = Listener()
        store = ProfileStore(url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), on_outage=listener)
        try:
            store.add_posts([Post("p1", "u1", "harbour boats harbour")])
            proxy.cut()
            done: dict = {}
            writer = threading.Thread(
                target=lambda: done.update(n=store.add_posts([Post("p2", "u1", "boats at dawn"), Post("p3", "u2", "dawn")]))
            )
            writer.start()
            time.sleep(2.0)
            assert writer.is_alive() and listener.waits, "the write should be waiting for the database"
            assert listener.recoveries == []
            proxy.restore()
            writer.join(timeout=30)
            assert done == {"n": 2} and listener.recoveries == ["write"]
            assert {w[0] for w in listener.waits} == {"write"}

            proxy.cut()
            reader = threading.Thread(target=lambda: done.update(top=store.top_keywords(["u1"], 1)))
            reader.start()
            time.sleep(1.0)
            proxy.restore()
            reader.join(timeout=30)
            assert [k.term for k in done["top"]["u1"]] == ["boats"] and listener.recoveries[-1] == "read"
            assert store.stats().posts == 3
        finally:
            store.close()
