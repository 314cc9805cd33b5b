"""Alembic environment: runs migrations on the connection ``profiles.database`` hands over.

With no connection given (the ``alembic`` command line), it connects to
``sqlalchemy.url`` from the config or $UAPT_DATABASE_URL.
On PostgreSQL the migration transaction holds an advisory lock, so workers
starting together do not race to create the same tables.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from profiles.database import open_engine
from profiles.urls import normalize_url, resolve_url

MIGRATION_LOCK_ID = 0x0A17_0001  # arbitrary, fixed: the advisory lock key for profile migrations


def run_migrations(connection: Connection) -> None:
    # transactional_ddl: SQLite runs DDL inside transactions too, given open_engine's explicit BEGIN
    context.configure(connection=connection, target_metadata=None, transactional_ddl=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_ID})
        context.run_migrations()


def main() -> None:
    if context.is_offline_mode():
        raise SystemExit("offline (--sql) migrations are not supported; run 'uapt db upgrade'")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = normalize_url(context.config.get_main_option("sqlalchemy.url") or resolve_url(None))
    with open_engine(url).begin() as connection:
        run_migrations(connection)


main()
