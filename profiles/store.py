"""The profile store: incremental TF-IDF profiles in SQLite or PostgreSQL.

Writes fold a batch of posts into the counts in one transaction, touching only
the batch's own rows: tf for (user, term), df where a user uses a term for the
first time, N where a user is new. Reads rank a batch of users' terms in one
SQL query (a window function), so scores always reflect the current N and df.

Concurrency (PostgreSQL): every count changes through an atomic upsert
(``INSERT … ON CONFLICT DO UPDATE SET df = df + excluded.df``), so concurrent
workers never lose an increment. Rows are locked in one global order (posts,
users, user terms, terms, each sorted by key; the N counter last), which rules
out deadlock cycles; a transaction that still fails with a serialization or
deadlock error is retried whole, a bounded number of times.

Outages (profiles/outages.py): every read and write, and opening the store, is
retried with capped backoff while the database is unreachable, for as long as
the ``on_outage`` listener allows; a write that failed mid-commit is safe to
re-run, because folding is idempotent by post_id.

Erasure (`forget_user`) is the fold run backwards for one user, in the same
lock order: their posts, their user row, their terms (df drops by one for each;
a term nobody else used goes), then N. What remains equals a store rebuilt from
everyone else's posts, and the user's next post starts a fresh profile.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection, Double, Table, bindparam, cast, delete, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from profiles.analyzer import analyze
from profiles.database import (
    check_host_resolves,
    current_revision,
    head_revision,
    open_engine,
    require_head,
    sqlite_path,
    upgrade,
)
from profiles.errors import ProfilesError
from profiles.ids import check_id
from profiles.outages import OutageListener, waiting_out_outages
from profiles.posts import Keyword, Post, validate_post
from profiles.schema import CORPUS_ROW_ID, Corpus, FoldedPost, ProfileUser, Term, UserTerm
from profiles.urls import normalize_url

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
RETRY_BASE_DELAY_S = 0.05
MAX_USERS_PER_QUERY = 500  # keeps the IN list within every driver's parameter limit
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected

_T = TypeVar("_T")

_users: Table = ProfileUser.__table__
_posts: Table = FoldedPost.__table__
_user_terms: Table = UserTerm.__table__
_terms: Table = Term.__table__
_corpus: Table = Corpus.__table__


@dataclass(frozen=True)
class StoreStats:
    users: int
    posts: int
    terms: int


@dataclass(frozen=True)
class Erasure:
    """What `ProfileStore.forget_user` removed: the user's folded posts and distinct terms."""

    posts: int
    terms: int


def _is_transient(error: DBAPIError) -> bool:
    """Errors after which running the same transaction again can succeed."""
    if getattr(error.orig, "sqlstate", None) in TRANSIENT_SQLSTATES:
        return True
    return "database is locked" in str(error.orig)  # SQLite writer contention past the busy timeout


def _unique_posts(posts: Sequence[Post]) -> list[Post]:
    """Validate every post and keep the first of each post_id, before anything is written."""
    unique: dict[str, Post] = {}
    for post in posts:
        validate_post(post)
        unique.setdefault(post.post_id, post)
    return list(unique.values())


class ProfileStore:
    """Users' TF-IDF keyword profiles behind a SQLAlchemy url.

    ``url`` is ``sqlite:///path.db`` (embedded default) or
    ``postgresql+psycopg://…`` (plain ``postgresql://`` is mapped to psycopg).
    With ``create=True`` the schema is migrated to the latest revision on open;
    otherwise a database not at that revision raises ``SchemaNotReady``.
    """

    def __init__(self, url: str, *, create: bool = True, on_outage: OutageListener | None = None) -> None:
        self.url = normalize_url(url)
        self._outages = on_outage
        path = sqlite_path(self.url)
        if not create and path is not None and not path.exists():
            raise FileNotFoundError(f"no profile database at {path}; create it with 'uapt db upgrade'")
        check_host_resolves(self.url)  # a mistyped host is a mistake at start-up, not an outage to wait out
        self._engine = open_engine(self.url)
        self._dialect = self._engine.dialect.name
        if self._dialect not in ("sqlite", "postgresql"):
            self._engine.dispose()
            raise ProfilesError(f"url must name a SQLite or PostgreSQL database, got {self._dialect}")
        if not create:
            self._waiting("open", lambda: require_head(self._engine))
        elif self._waiting("open", lambda: current_revision(self._engine)) != head_revision():
            self._waiting("open", lambda: upgrade(self._engine))

    def __enter__(self) -> ProfileStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._engine.dispose()

    def add_posts(self, posts: Sequence[Post]) -> int:
        """Fold posts into their users' profiles in one transaction; returns how many were new.

        Posts already folded (same post_id, in the store or earlier in the batch)
        are skipped. An invalid post raises InvalidPost before anything is written.
        """
        unique = _unique_posts(posts)
        if not unique:
            return 0
        analyzed = {post.post_id: (post.user_id, Counter(analyze(post.text))) for post in unique}
        return self._transaction(lambda connection: self._fold(connection, analyzed))

    def forget_user(self, user_id: str) -> Erasure:
        """Erase a user's posts, terms and counts in one transaction, as if they had never posted.

        Idempotent: a user with nothing in the store gives Erasure(0, 0). Post ids
        are forgotten too, so a replay of the user's old posts would fold them again
        (the worker orders erasures after the posts before them; see worker/processing.py).
        An invalid id raises InvalidId before anything is touched.
        """
        check_id(user_id, "user_id")
        return self._transaction(lambda connection: self._erase(connection, user_id))

    def top_keywords(self, user_ids: Sequence[str], k: int) -> dict[str, list[Keyword]]:
        """Each user's k best keywords, best first; users without posts get []."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        wanted = list(dict.fromkeys(user_ids))

        def read(connection: Connection) -> dict[str, list[Keyword]]:
            found: dict[str, list[Keyword]] = {user_id: [] for user_id in wanted}
            for start in range(0, len(wanted), MAX_USERS_PER_QUERY):
                rows = connection.execute(self._top_k_query(wanted[start : start + MAX_USERS_PER_QUERY], k))
                for user_id, term, score in rows:
                    found[user_id].append(Keyword(term, float(score)))
            return found

        return self._transaction(read, operation="read")

    def stats(self) -> StoreStats:
        with self._engine.connect() as connection:
            users = connection.execute(select(_corpus.c.n_users).where(_corpus.c.id == CORPUS_ROW_ID)).scalar_one()
            posts = connection.execute(select(func.count()).select_from(_posts)).scalar_one()
            terms = connection.execute(select(func.count()).select_from(_terms)).scalar_one()
        return StoreStats(users=users, posts=posts, terms=terms)

    def refresh_statistics(self) -> None:
        """Update the query planner's table statistics (ANALYZE), e.g. after a bulk import.

        PostgreSQL's autovacuum does this eventually; until it does, a freshly
        filled store can get sequential scans for top-k reads.
        """
        with self._engine.begin() as connection:
            for table in (_users, _posts, _user_terms, _terms):
                connection.exec_driver_sql(f"ANALYZE {table.name}")

    def _transaction(self, work: Callable[[Connection], _T], operation: str = "write") -> _T:
        """Run ``work`` in one transaction, re-running it whole after transient conflicts and through outages."""

        def once() -> _T:
            with self._engine.begin() as connection:
                return work(connection)

        attempt = 1
        while True:
            try:
                return self._waiting(operation, once)
            except DBAPIError as error:
                if attempt == MAX_ATTEMPTS or not _is_transient(error):
                    raise
                delay = RETRY_BASE_DELAY_S * 2 ** (attempt - 1) * (1 + random.random())
                logger.warning("profile write conflicted (%s); retry %d in %.2fs", error.orig, attempt, delay)
                time.sleep(delay)
                attempt += 1

    def _waiting(self, operation: str, attempt: Callable[[], _T]) -> _T:
        """``attempt()``, tried again while the database is unreachable (see profiles/outages.py)."""
        where = self._engine.url.render_as_string(hide_password=True)
        return waiting_out_outages(operation, attempt, self._outages, where)

    def _insert(self, table: Table):
        return (postgresql if self._dialect == "postgresql" else sqlite).insert(table)

    def _fold(self, connection: Connection, analyzed: dict[str, tuple[str, Counter[str]]]) -> int:
        """The body of add_posts' transaction; rows are touched in the global lock order (see module doc)."""
        new_post_ids = self._insert_new_posts(connection, analyzed)
        new_posts: Counter[str] = Counter()
        tf_delta: dict[str, Counter[str]] = defaultdict(Counter)
        for post_id in new_post_ids:
            user_id, counts = analyzed[post_id]
            new_posts[user_id] += 1
            tf_delta[user_id].update(counts)
        if not new_posts:
            return 0
        n_new_users = self._add_user_posts(connection, new_posts)
        df_delta = self._add_term_counts(connection, tf_delta)
        if df_delta:
            terms = self._insert(_terms)
            # RETURNING (unused) makes SQLAlchemy send multi-row statements instead of one per row
            terms = terms.on_conflict_do_update(
                index_elements=["term"], set_={"df": _terms.c.df + terms.excluded.df}
            ).returning(_terms.c.term)
            connection.execute(terms, [{"term": term, "df": df_delta[term]} for term in sorted(df_delta)])
        if n_new_users:
            connection.execute(
                update(_corpus).where(_corpus.c.id == CORPUS_ROW_ID).values(n_users=_corpus.c.n_users + n_new_users)
            )
        return len(new_post_ids)

    def _erase(self, connection: Connection, user_id: str) -> Erasure:
        """The body of forget_user's transaction; rows are touched in the global lock order (see module doc)."""
        posts = connection.execute(delete(_posts).where(_posts.c.user_id == user_id)).rowcount
        had_posts = connection.execute(
            delete(_users).where(_users.c.user_id == user_id).returning(_users.c.user_id)
        ).first() is not None
        terms = sorted(
            connection.execute(
                delete(_user_terms).where(_user_terms.c.user_id == user_id).returning(_user_terms.c.term)
            ).scalars()
        )
        if terms:
            one_user_less = update(_terms).where(_terms.c.term == bindparam("used")).values(df=_terms.c.df - 1)
            connection.execute(one_user_less, [{"used": term} for term in terms])  # one row at a time, in order
            for start in range(0, len(terms), MAX_USERS_PER_QUERY):
                chunk = terms[start : start + MAX_USERS_PER_QUERY]
                connection.execute(delete(_terms).where(_terms.c.term.in_(chunk), _terms.c.df == 0))
        if had_posts:
            connection.execute(
                update(_corpus).where(_corpus.c.id == CORPUS_ROW_ID).values(n_users=_corpus.c.n_users - 1)
            )
        return Erasure(posts=posts, terms=len(terms))

    def _insert_new_posts(self, connection: Connection, analyzed: dict[str, tuple[str, Counter[str]]]) -> list[str]:
        """Record the batch's post ids; returns those not folded before (the rest are replays)."""
        inserted = self._insert(_posts).on_conflict_do_nothing(index_elements=["post_id"])
        rows = [{"post_id": post_id, "user_id": analyzed[post_id][0]} for post_id in sorted(analyzed)]
        return list(connection.execute(inserted.returning(_posts.c.post_id), rows).scalars())

    def _add_user_posts(self, connection: Connection, new_posts: Counter[str]) -> int:
        """Count the new posts per user (locking each user's row); returns how many users are new."""
        users = self._insert(_users)
        users = users.on_conflict_do_update(
            index_elements=["user_id"], set_={"n_posts": _users.c.n_posts + users.excluded.n_posts}
        ).returning(_users.c.user_id, _users.c.n_posts)
        rows = [{"user_id": user_id, "n_posts": new_posts[user_id]} for user_id in sorted(new_posts)]
        return sum(n_posts == new_posts[user_id] for user_id, n_posts in connection.execute(users, rows))

    def _add_term_counts(self, connection: Connection, tf_delta: dict[str, Counter[str]]) -> Counter[str]:
        """Add to tf(u, t); returns, per term, how many users used it for the first time (their df increment).

        A row whose tf after the upsert equals the added count did not exist
        before. That test is exact because the user's row lock, taken in
        _add_user_posts, keeps other writers off this user's terms.
        """
        rows = [
            {"user_id": user_id, "term": term, "tf": counts[term]}
            for user_id, counts in sorted(tf_delta.items())
            for term in sorted(counts)
        ]
        df_delta: Counter[str] = Counter()
        if not rows:
            return df_delta
        user_terms = self._insert(_user_terms)
        user_terms = user_terms.on_conflict_do_update(
            index_elements=["user_id", "term"], set_={"tf": _user_terms.c.tf + user_terms.excluded.tf}
        ).returning(_user_terms.c.user_id, _user_terms.c.term, _user_terms.c.tf)
        for user_id, term, tf in connection.execute(user_terms, rows):
            if tf == tf_delta[user_id][term]:
                df_delta[term] += 1
        return df_delta

    def _top_k_query(self, user_ids: list[str], k: int):
        one = literal(1.0, Double)
        n_users = select(_corpus.c.n_users).where(_corpus.c.id == CORPUS_ROW_ID).scalar_subquery()
        score = cast(_user_terms.c.tf, Double) * (
            func.ln((one + cast(n_users, Double)) / (one + cast(_terms.c.df, Double))) + one
        )
        # code-point order on both databases, as Python sorts (PostgreSQL's default collation differs)
        term_order = _user_terms.c.term.collate("C") if self._dialect == "postgresql" else _user_terms.c.term
        ranked = (
            select(
                _user_terms.c.user_id,
                _user_terms.c.term,
                score.label("score"),
                func.row_number()
                .over(partition_by=_user_terms.c.user_id, order_by=(score.desc(), term_order))
                .label("rank"),
            )
            .join(_terms, _terms.c.term == _user_terms.c.term)
            .where(_user_terms.c.user_id.in_(user_ids))
            .subquery()
        )
        return (
            select(ranked.c.user_id, ranked.c.term, ranked.c.score)
            .where(ranked.c.rank <= k)
            .order_by(ranked.c.user_id, ranked.c.rank)
        )
