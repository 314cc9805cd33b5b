"""Telling a database outage from a mistake, and waiting the outage out.

An outage (connection refused, server closed the connection, administrator
shutdown, server starting up, too many clients) ends by itself: the store waits
with capped exponential backoff and tries again. A configuration that can never
work (unknown database or role, failed authentication) is not an outage and is
raised at once. The store's owner decides how long to wait through an
`OutageListener`, so this package never learns about readiness or metrics.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Protocol, TypeVar

import psycopg.errors
from sqlalchemy.exc import DBAPIError

from profiles.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

FIRST_DELAY_S = 0.1
MAX_DELAY_S = 5.0
# SQLSTATEs of a server going away or not yet there: class 08 (connection exception) is checked by prefix
UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})  # admin/crash shutdown, starting, too many clients
# Refusals that waiting cannot fix, by psycopg class (SQLSTATE): unknown database (3D000), login refused
# (28000, and its 28P01 wrong password), no right to connect (42501)
MISCONFIGURED_ERRORS = (
    psycopg.errors.InvalidCatalogName,
    psycopg.errors.InvalidAuthorizationSpecification,
    psycopg.errors.InvalidPassword,
    psycopg.errors.InsufficientPrivilege,
)
# libpq gives no SQLSTATE for a connection the server refuses while it starts (psycopg 3.3 raises a bare
# OperationalError), so for those the server's words are all there is: these never heal by waiting
MISCONFIGURED_MESSAGES = ("does not exist", "authentication failed", "pg_hba.conf", "permission denied")

_T = TypeVar("_T")


class OutageListener(Protocol):
    """Told about each wait of an outage; ``waiting`` returns False to stop waiting (DatabaseUnavailable).

    ``sleep`` is the wait itself, so that its owner can keep other duties going meanwhile (the
    worker keeps polling its Kafka consumer, so that it stays in its group)."""

    def waiting(self, operation: str, error: DBAPIError, delay_s: float) -> bool: ...

    def sleep(self, seconds: float) -> None: ...

    def recovered(self, operation: str) -> None: ...


def is_misconfigured(error: DBAPIError) -> bool:
    """A connection refused for a reason waiting cannot fix: wrong database, role or password.

    By the error's class where the driver gives one (a SQLSTATE); a refusal at connection start
    has none, and is told by libpq's FATAL message.
    """
    if isinstance(error.orig, MISCONFIGURED_ERRORS):
        return True
    if getattr(error.orig, "sqlstate", None) is not None:
        return False
    message = str(error.orig).lower()
    return "fatal" in message and any(words in message for words in MISCONFIGURED_MESSAGES)


def is_unavailable(error: DBAPIError) -> bool:
    """The database cannot be reached now but may be later: worth waiting for."""
    if is_misconfigured(error):
        return False
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate.startswith("08") or sqlstate in UNAVAILABLE_SQLSTATES
    if error.connection_invalidated:
        return True
    # psycopg raises connection failures (refused, reset, name not resolved) as OperationalError without SQLSTATE;
    # SQLite's OperationalError without one ("no such table") is a fault, not an outage
    kind = type(error.orig)
    return kind.__module__.startswith("psycopg") and kind.__name__ == "OperationalError"


def waiting_out_outages(
    operation: str, attempt: Callable[[], _T], listener: OutageListener | None, describe: str
) -> _T:
    """Run ``attempt`` until it does not fail with an outage, sleeping a capped, jittered backoff between tries.

    Without a listener, or once it says stop, the outage is raised as DatabaseUnavailable.
    """
    delay, waited = FIRST_DELAY_S, False
    while True:
        try:
            result = attempt()
        except DBAPIError as error:
            if not is_unavailable(error):
                raise
            reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
            pause = delay * (0.5 + random.random() / 2)
            if listener is None or not listener.waiting(operation, error, pause):
                raise DatabaseUnavailable(f"database {describe} is unavailable ({operation}): {reason}") from error
            logger.warning("database %s unavailable during %s (%s); retrying in %.1fs", describe, operation, reason, pause)
            listener.sleep(pause)
            delay, waited = min(delay * 2, MAX_DELAY_S), True
            continue
        if waited and listener is not None:
            logger.info("database %s is back; %s succeeded", describe, operation)
            listener.recovered(operation)
        return result
