"""Which profile database a command uses, kept free of SQLAlchemy so ``uapt --help`` imports nothing heavy."""

from __future__ import annotations

import os

DEFAULT_URL = "sqlite:///uapt-profiles.db"
URL_ENV = "UAPT_DATABASE_URL"


def resolve_url(flag: str | None) -> str:
    """The database url a command uses: the --db flag, else $UAPT_DATABASE_URL, else the local SQLite file."""
    return flag or os.environ.get(URL_ENV) or DEFAULT_URL


def normalize_url(url: str) -> str:
    """Map plain ``postgresql://`` / ``postgres://`` urls to the psycopg (v3) driver; leave others alone."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
