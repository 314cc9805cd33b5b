"""Connecting to the profile database and bringing its schema up to date.

Alembic is driven from code, with ``script_location`` pointing at the installed
``migrations`` package, so ``uapt db upgrade`` works from any directory and the
store can migrate itself when it opens (``ProfileStore(create=True)``).
"""

from __future__ import annotations

import logging
import math
import socket
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url

import migrations
from profiles.errors import DatabaseMisconfigured, ProfilesError
from profiles.urls import normalize_url

logger = logging.getLogger(__name__)
# Alembic announces its plugin set-up at INFO on every command; keep `uapt` output to what matters.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

SQLITE_BUSY_TIMEOUT_S = 30.0
PG_CONNECT_TIMEOUT_S = 10  # a connection attempt to a vanished host ends, and the outage is retried
VERSION_TABLE = "alembic_version"


class SchemaNotReady(ProfilesError):
    """The database behind a url is missing the profile schema or is not at the head revision."""


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite url, or None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def check_host_resolves(url: str) -> None:
    """Raise DatabaseMisconfigured if the url's host name does not exist (the resolver says so: EAI_NONAME);
    a resolver that cannot answer now (EAI_AGAIN) is an outage, left to the connection's own retries."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or not parsed.host:
        return
    try:
        socket.getaddrinfo(parsed.host, parsed.port or 5432, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        if error.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            raise DatabaseMisconfigured(f"database host {parsed.host!r} does not resolve ({error.strerror})") from None


def open_engine(url: str) -> Engine:
    """An engine for ``url`` with the settings the store relies on.

    SQLite gets real transactions (DDL included: pysqlite's own transaction
    handling is switched off and BEGIN is emitted by SQLAlchemy), a busy
    timeout for concurrent writers, WAL for file databases, and an ``ln``
    function (SQLite builds differ in whether they have one).
    """
    url = normalize_url(url)
    if make_url(url).get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S})
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    is_file = sqlite_path(url) is not None

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.create_function("ln", 1, math.log, deterministic=True)
        if is_file:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            dbapi_connection.execute("PRAGMA synchronous=NORMAL")
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN")

    return engine


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    # __path__, not __file__: an editable install made before migrations/__init__.py existed maps it as a namespace
    config.set_main_option("script_location", next(iter(migrations.__path__)))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the schema up to ``revision`` in one transaction."""
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), revision)


def downgrade(engine: Engine, revision: str = "-1") -> None:
    """Migrate the schema down to ``revision`` (default: one step) in one transaction."""
    with engine.begin() as connection:
        command.downgrade(_alembic_config(connection), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it has never been migrated.

    Reads Alembic's version table directly: cheaper than an Alembic context,
    and silent, which matters because every store open asks.
    """
    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one_or_none()


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("the migrations package holds no revision")
    return head


def require_head(engine: Engine) -> None:
    """Raise SchemaNotReady unless the schema is at the latest revision."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaNotReady(
            f"profile database {engine.url.render_as_string(hide_password=True)} is at revision "
            f"{current or 'none'}, expected {head}; run 'uapt db upgrade'"
        )
