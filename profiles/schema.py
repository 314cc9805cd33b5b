"""SQLAlchemy 2.0 models of the profile store.

Counts are kept, not texts: tf per (user, term), df per term, N in a one-row
counter, so a new post touches only its own terms' rows. ``profile_posts``
remembers folded post ids, which makes folding idempotent. The Alembic
migrations in ``migrations/versions`` create exactly these tables (a test
compares them).

``profile_user_terms.user_id`` has no foreign key on purpose: rows are only
written by the store right after upserting their user in the same transaction,
and PostgreSQL's per-row key check cost a quarter of the update latency.
"""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from profiles.analyzer import MAX_TERM_CHARS
from profiles.ids import MAX_ID_CHARS

CORPUS_ROW_ID = 1


class Base(DeclarativeBase):
    pass


class ProfileUser(Base):
    """A user with at least one folded post; the number of rows is N."""

    __tablename__ = "profile_users"

    user_id: Mapped[str] = mapped_column(String(MAX_ID_CHARS), primary_key=True)
    n_posts: Mapped[int] = mapped_column(Integer, nullable=False)


class FoldedPost(Base):
    """A post already folded into its user's profile (replays are skipped)."""

    __tablename__ = "profile_posts"

    post_id: Mapped[str] = mapped_column(String(MAX_ID_CHARS), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(MAX_ID_CHARS), nullable=False, index=True)  # erasure finds them


class UserTerm(Base):
    """tf(u, t): how often user u used term t over all their posts."""

    __tablename__ = "profile_user_terms"

    user_id: Mapped[str] = mapped_column(String(MAX_ID_CHARS), primary_key=True)
    term: Mapped[str] = mapped_column(String(MAX_TERM_CHARS), primary_key=True)
    tf: Mapped[int] = mapped_column(Integer, nullable=False)


class Term(Base):
    """df(t): how many users used term t."""

    __tablename__ = "profile_terms"

    term: Mapped[str] = mapped_column(String(MAX_TERM_CHARS), primary_key=True)
    df: Mapped[int] = mapped_column(Integer, nullable=False)


class Corpus(Base):
    """The single row holding N, so reads need not count users."""

    __tablename__ = "profile_corpus"
    __table_args__ = (CheckConstraint(f"id = {CORPUS_ROW_ID}", name="profile_corpus_single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    n_users: Mapped[int] = mapped_column(Integer, nullable=False)
