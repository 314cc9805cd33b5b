"""Alembic environment: runs migrations on the connection ``profiles.database`` hands over.

profiles/ drives migrations/, never the other way: this file imports nothing of
profiles. With no connection given (the plain ``alembic`` command line, with an
ini file the user writes), it connects to that config's ``sqlalchemy.url``.
On PostgreSQL the migration transaction holds an advisory lock, so workers
starting together do not race to create the same tables.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, text

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
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no sqlalchemy.url in the alembic config; run 'uapt db upgrade --db URL' instead")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()


main()
