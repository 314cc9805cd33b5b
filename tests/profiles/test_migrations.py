"""Alembic migrations on SQLite and PostgreSQL: up, down, up again, and the schema the models expect."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from profiles import Post
from profiles.database import current_revision, downgrade, head_revision, open_engine, upgrade
from profiles.schema import Base
from profiles.store import ProfileStore

PROFILE_TABLES = {"profile_users", "profile_posts", "profile_user_terms", "profile_terms", "profile_corpus"}


def profile_tables(engine) -> set[str]:
    return PROFILE_TABLES & set(inspect(engine).get_table_names())


def test_upgrade_downgrade_upgrade(store_url: str) -> None:
    engine = open_engine(store_url)
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert profile_tables(engine) == PROFILE_TABLES
        with ProfileStore(store_url, create=False) as store:
            store.add_posts([Post("p1", "u1", "before the downgrade")])

        downgrade(engine, "base")
        assert current_revision(engine) is None
        assert profile_tables(engine) == set()

        upgrade(engine)
        with ProfileStore(store_url, create=False) as store:
            assert store.stats().posts == 0
            assert store.add_posts([Post("p1", "u1", "after the upgrade")]) == 1
            assert [k.term for k in store.top_keywords(["u1"], 3)["u1"]] == ["upgrade"]
    finally:
        engine.dispose()


def test_migrated_schema_matches_models(store_url: str) -> None:
    engine = open_engine(store_url)
    try:
        upgrade(engine)
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == []
    finally:
        engine.dispose()
