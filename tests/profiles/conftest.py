"""Fixtures for the profile store tests: one store per backend, clearing and snapshotting it.

PostgreSQL tests get their own schema (dropped afterwards), so parallel or
repeated runs never see each other's tables. They are skipped, with the
reason, when the server is unreachable.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from profile_samples import PROFILE_TABLES, dump_store
from sqlalchemy import create_engine, text

from profiles.store import ProfileStore

PG_URL = os.environ.get("UAPT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_unreachable_reason() -> str | None:
    try:
        with create_engine(PG_URL, connect_args={"connect_timeout": 3}).connect():
            return None
    except Exception as error:  # any failure to connect means: skip, and say why
        return f"PostgreSQL at {PG_URL} unreachable: {str(error).splitlines()[0]}"


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    reason = _pg_unreachable_reason()
    if reason:
        pytest.skip(reason)
    return PG_URL


@pytest.fixture
def pg_schema_url(pg_admin_url: str) -> Iterator[Callable[[], str]]:
    """Factory of fresh, empty PostgreSQL schemas; each url sets search_path to its own schema."""
    engine = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def make() -> str:
        schema = f"test_profiles_{uuid.uuid4().hex[:12]}"
        with engine.connect() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        created.append(schema)
        return f"{pg_admin_url}?options=-csearch_path%3D{schema}"

    yield make
    with engine.connect() as connection:
        for schema in created:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A url of an empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'profiles.db'}"
    return request.getfixturevalue("pg_schema_url")()


@pytest.fixture
def store(store_url: str) -> Iterator[ProfileStore]:
    with ProfileStore(store_url) as opened:
        yield opened


@pytest.fixture
def clear_store(store_url: str) -> Iterator[Callable[[], None]]:
    """Empty the store's tables (back to the freshly migrated state) without re-migrating."""
    engine = create_engine(store_url)

    def clear() -> None:
        with engine.begin() as connection:
            for table in PROFILE_TABLES[:-1][::-1]:
                connection.execute(text(f"DELETE FROM {table}"))
            connection.execute(text("UPDATE profile_corpus SET n_users = 0"))

    yield clear
    engine.dispose()


@pytest.fixture
def snapshot(store_url: str) -> Callable[[], dict[str, list[tuple]]]:
    """Take a dump of the store under test (see ``dump_store``)."""
    return lambda: dump_store(store_url)
