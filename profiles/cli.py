"""`uapt db …` (schema migrations) and `uapt profiles …` (import, show, stats, forget).

Heavy imports (SQLAlchemy, Alembic, scikit-learn) happen inside the handlers so
``uapt --help`` stays instant. Errors a user can cause (bad url, unreachable
server, missing file, bad JSONL line) end with one line on stderr and a
non-zero exit, not a traceback.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from profiles.urls import DEFAULT_URL, URL_ENV, resolve_url

DEFAULT_K = 10


def _add_db_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="URL",
        help=(
            f"profile database url, e.g. sqlite:///profiles.db or postgresql://user@host/db "
            f"(default: ${URL_ENV}, else {DEFAULT_URL})"
        ),
    )


@contextmanager
def _user_errors(command: str):
    """Turn the profiles package's own errors, a bad url and an unreachable or misconfigured database
    into a one-line 'uapt COMMAND: …' exit; anything else is a bug and keeps its traceback."""
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    from profiles.errors import ProfilesError
    from profiles.outages import is_misconfigured, is_unavailable

    try:
        yield
    except (ProfilesError, FileNotFoundError, ArgumentError, NoSuchModuleError) as error:
        raise SystemExit(f"uapt {command}: {error}") from None
    except DBAPIError as error:
        if not (is_unavailable(error) or is_misconfigured(error)):
            raise
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise SystemExit(f"uapt {command}: database error: {reason}") from None


def _open_store(args: argparse.Namespace, *, create: bool):
    from profiles.store import ProfileStore

    return ProfileStore(resolve_url(args.db), create=create)


def _migrate(command: str, migrate: Callable, revision: str, args: argparse.Namespace) -> int:
    from profiles.database import current_revision, open_engine

    with _user_errors(command):
        engine = open_engine(resolve_url(args.db))
        try:
            migrate(engine, revision)
            print(f"database at revision {current_revision(engine) or 'base (empty)'}")
        finally:
            engine.dispose()
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    from profiles.database import upgrade

    return _migrate("db upgrade", upgrade, args.revision, args)


def _db_downgrade(args: argparse.Namespace) -> int:
    from profiles.database import downgrade

    return _migrate("db downgrade", downgrade, args.revision, args)


def _db_current(args: argparse.Namespace) -> int:
    from profiles.database import current_revision, head_revision, open_engine

    with _user_errors("db current"):
        engine = open_engine(resolve_url(args.db))
        try:
            current = current_revision(engine)
        finally:
            engine.dispose()
    head = head_revision()
    print(f"{current or 'base (empty)'}{' (head)' if current == head else f' (head is {head})'}")
    return 0


def _profiles_import(args: argparse.Namespace) -> int:
    from profiles.importer import ImportStopped, import_jsonl

    if not args.file.is_file():
        raise SystemExit(f"uapt profiles import: no such file: {args.file}")
    with _user_errors("profiles import"), _open_store(args, create=True) as store:
        try:
            report = import_jsonl(
                store, args.file, chunk_size=args.chunk_size, on_error=args.on_error, progress=not args.quiet
            )
        except ImportStopped as stopped:
            raise SystemExit(f"uapt profiles import: {stopped}") from None
    print(
        f"imported {report.folded} new posts from {report.lines} lines of {args.file} "
        f"({report.replayed} already present, {len(report.errors)} lines skipped)"
    )
    return 0


def _profiles_show(args: argparse.Namespace) -> int:
    with _user_errors("profiles show"), _open_store(args, create=False) as store:
        keywords = store.top_keywords([args.user], args.k)[args.user]
    if not keywords:
        raise SystemExit(f"uapt profiles show: user {args.user!r} has no posts in the store")
    if args.json:
        print(json.dumps([{"term": keyword.term, "score": keyword.score} for keyword in keywords]))
    else:
        for keyword in keywords:
            print(f"{keyword.score:10.4f}  {keyword.term}")
    return 0


def _profiles_stats(args: argparse.Namespace) -> int:
    with _user_errors("profiles stats"), _open_store(args, create=False) as store:
        stats = store.stats()
    if args.json:
        print(json.dumps({"users": stats.users, "posts": stats.posts, "terms": stats.terms}))
    else:
        print(f"users: {stats.users}\nposts: {stats.posts}\nterms: {stats.terms}")
    return 0


def _profiles_forget(args: argparse.Namespace) -> int:
    with _user_errors("profiles forget"), _open_store(args, create=False) as store:
        erased = store.forget_user(args.user)
    if erased.posts:
        print(f"forgot user {args.user!r}: {erased.posts} posts and {erased.terms} terms erased")
    else:
        print(f"user {args.user!r} has nothing in the store; nothing erased")
    return 0


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `uapt db` and `uapt profiles` to the `uapt` parser."""
    db = subparsers.add_parser(
        "db",
        help="migrate the profile database schema (Alembic)",
        description="Create, upgrade or downgrade the profile store's schema on SQLite or PostgreSQL.",
    )
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = db_commands.add_parser("upgrade", help="migrate the schema up (creates it on an empty database)")
    upgrade.add_argument("revision", nargs="?", default="head", help="target revision (default: head)")
    _add_db_flag(upgrade)
    upgrade.set_defaults(func=_db_upgrade)
    downgrade = db_commands.add_parser("downgrade", help="migrate the schema down (drops profile data)")
    downgrade.add_argument(
        "revision", nargs="?", default="-1", help="target revision: -1 for one step, base for none (default: -1)"
    )
    _add_db_flag(downgrade)
    downgrade.set_defaults(func=_db_downgrade)
    current = db_commands.add_parser("current", help="print the schema revision the database is at")
    _add_db_flag(current)
    current.set_defaults(func=_db_current)

    profiles = subparsers.add_parser(
        "profiles",
        help="user TF-IDF keyword profiles: import posts, show keywords, stats, forget a user",
        description="Each user's posts form one TF-IDF document; their top terms become the caption context.",
    )
    profile_commands = profiles.add_subparsers(dest="profiles_command", metavar="ACTION", required=True)
    importer = profile_commands.add_parser(
        "import",
        help="fold posts from a JSONL file into the profiles",
        description=(
            'Each line is a JSON object with "post_id", "user_id" and "text" (other fields are ignored). '
            "Posts already in the store are skipped, so re-running an import is safe. "
            "Creates or upgrades the schema if needed."
        ),
    )
    importer.add_argument("file", type=Path, metavar="FILE.jsonl", help="posts, one JSON object per line")
    importer.add_argument(
        "--on-error",
        choices=("skip", "stop"),
        default="stop",
        help="on a bad line: report it and go on (skip), or stop after importing the lines before it (default: stop)",
    )
    importer.add_argument(
        "--chunk-size", type=_positive_int, default=1000, help="posts per transaction (default: 1000)"
    )
    importer.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_db_flag(importer)
    importer.set_defaults(func=_profiles_import)

    show = profile_commands.add_parser("show", help="print a user's top keywords with their TF-IDF scores")
    show.add_argument("user", metavar="USER", help="user id")
    show.add_argument("-k", type=_positive_int, default=DEFAULT_K, help=f"how many keywords (default: {DEFAULT_K})")
    show.add_argument("--json", action="store_true", help="print a JSON list of {term, score}")
    _add_db_flag(show)
    show.set_defaults(func=_profiles_show)

    forget = profile_commands.add_parser(
        "forget",
        help="erase a user's posts, terms and counts from the store (a right-to-erasure request)",
        description=(
            "Remove everything the store holds about USER: their folded posts, their term counts, and their "
            "share of every document frequency and of the user count, so the store equals one rebuilt without "
            "them. Running it again erases nothing more. While workers consume the input topic, publish a "
            "uapt.forget/1 event instead (uapt publish-forget USER): the workers apply it in order with the "
            "user's posts, so a post still in flight cannot bring them back. "
            "Captions already published and dead letters are not touched (README, Operating: erasure)."
        ),
    )
    forget.add_argument("user", metavar="USER", help="user id")
    _add_db_flag(forget)
    forget.set_defaults(func=_profiles_forget)

    stats = profile_commands.add_parser("stats", help="print how many users, posts and terms the store holds")
    stats.add_argument("--json", action="store_true", help="print a JSON object")
    _add_db_flag(stats)
    stats.set_defaults(func=_profiles_stats)
