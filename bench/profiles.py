"""Benchmark of the profile store: update and top-k latency as the corpus grows, against refitting.

    .venv/bin/python -m bench.profiles [--db URL] [--sizes 1000,10000,100000]

Fills a store (SQLite in a temporary directory by default; a PostgreSQL url
gets a scratch schema, dropped afterwards) with synthetic posts: Zipf-distributed
words, about 10 words per post, users with skewed activity and a few words of
their own. At each size it measures

* the update latency per post: ``add_posts`` on batches of 32 new posts, divided by 32;
* the top-k read latency: ``top_keywords`` (k=10) for a batch of 32 users;
* the naive way: refitting scikit-learn's TfidfVectorizer on every user document
  for one new post.

Latencies are medians over repeats; the timed updates straddle each size (the
store is filled to just below it, then the timed batches are added). The last line compares the largest size with
the smallest: ``update_growth_1e5_vs_1e3=<x> topk_ms_1e5=<y> speedup_vs_refit_1e5=<z>``
(the names assume the default sizes).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from profiles import Post, analyze
from profiles.analyzer import stop_words
from profiles.store import ProfileStore
from profiles.urls import normalize_url

UPDATE_BATCH = 32
READ_BATCH = 32
TOP_K = 10
FILL_BATCH = 5000
VOCABULARY = 50_000
ZIPF_EXPONENT = 1.07
USERS = 5000
OWN_WORDS_PER_USER = 20
OWN_WORDS_PER_POST = 3
WORDS_PER_POST = (6, 14)  # uniform, mean 10
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


class SyntheticPosts:
    """A seeded, endless stream of posts with a realistic word distribution."""

    def __init__(self, seed: int, users: int = USERS) -> None:
        self._rng = np.random.default_rng(seed)
        self._vocabulary = self._make_vocabulary()
        ranks = np.arange(1, VOCABULARY + 1)
        self._word_p = ranks**-ZIPF_EXPONENT / np.sum(ranks**-ZIPF_EXPONENT)
        activity = np.arange(1, users + 1) ** -0.8
        self._user_p = activity / activity.sum()
        self._own_words = self._rng.integers(1000, VOCABULARY, size=(users, OWN_WORDS_PER_USER))
        self._next_id = 0

    def _make_vocabulary(self) -> np.ndarray:
        excluded, words = stop_words(), set()
        while len(words) < VOCABULARY:
            word = "".join(self._rng.choice(SYLLABLES, size=self._rng.integers(2, 5)))
            if word not in excluded:
                words.add(word)
        return np.array(sorted(words))

    def take(self, n: int) -> list[Post]:
        users = self._rng.choice(len(self._user_p), size=n, p=self._user_p)
        lengths = self._rng.integers(WORDS_PER_POST[0], WORDS_PER_POST[1] + 1, size=n)
        shared = self._rng.choice(VOCABULARY, size=int(lengths.sum()), p=self._word_p)
        posts, start = [], 0
        for user, length in zip(users, lengths, strict=True):
            own = self._rng.choice(self._own_words[user], size=OWN_WORDS_PER_POST)
            words = np.concatenate([shared[start : start + length - OWN_WORDS_PER_POST], own])
            start += length
            posts.append(Post(f"p{self._next_id}", f"u{user}", " ".join(self._vocabulary[words])))
            self._next_id += 1
        return posts


@dataclass(frozen=True)
class SizeResult:
    size: int
    posts: int
    users: int
    terms: int
    fill_s: float
    update_ms_per_post: float
    topk_ms: float
    refit_ms: float

    @property
    def speedup(self) -> float:
        return self.refit_ms / self.update_ms_per_post


def median_ms(run: Callable[[], object], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        timings.append((time.perf_counter() - began) * 1000)
    return statistics.median(timings)


def refit_ms(documents: dict[str, list[str]], repeats: int) -> float:
    """The naive update: fit TfidfVectorizer on one document per user, from scratch."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [" ".join(parts) for parts in documents.values()]
    return median_ms(
        lambda: TfidfVectorizer(norm=None, smooth_idf=True, analyzer=analyze).fit_transform(texts), repeats
    )


@contextmanager
def scratch_database(url: str | None) -> Iterator[str]:
    """An empty database: a temp SQLite file, a scratch schema on PostgreSQL, or the given empty SQLite url."""
    if url is None:
        with tempfile.TemporaryDirectory(prefix="bench-profiles-") as directory:
            yield f"sqlite:///{Path(directory) / 'profiles.db'}"
        return
    url = normalize_url(url)
    if not url.startswith("postgresql"):
        yield url
        return
    from sqlalchemy import create_engine, text

    schema = f"bench_profiles_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in url else "?"
    try:
        yield f"{url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def run(url: str, sizes: list[int], repeats: int, seed: int) -> list[SizeResult]:
    stream = SyntheticPosts(seed)
    rng = np.random.default_rng(seed + 1)
    documents: dict[str, list[str]] = {}
    results = []

    def add(store: ProfileStore, posts: list[Post]) -> None:
        store.add_posts(posts)
        for post in posts:
            documents.setdefault(post.user_id, []).append(post.text)

    with ProfileStore(url) as store:
        if store.stats().posts:
            raise SystemExit(f"bench.profiles: {url} already holds posts; give an empty database")
        for size in sorted(sizes):
            began = time.perf_counter()
            fill_to = max(0, size - repeats * UPDATE_BATCH // 2)  # the timed updates then straddle `size`
            while (have := store.stats().posts) < fill_to:
                add(store, stream.take(min(FILL_BATCH, fill_to - have)))
            store.refresh_statistics()  # what autovacuum (PostgreSQL) would have done by steady state
            fill_s = time.perf_counter() - began

            batches = iter([stream.take(UPDATE_BATCH) for _ in range(repeats)])
            update_ms = median_ms(lambda: add(store, next(batches)), repeats) / UPDATE_BATCH

            users = list(documents)
            topk_ms = median_ms(
                lambda: store.top_keywords(list(rng.choice(users, size=READ_BATCH, replace=False)), TOP_K), repeats
            )
            stats = store.stats()
            results.append(
                SizeResult(
                    size=size,
                    posts=stats.posts,
                    users=stats.users,
                    terms=stats.terms,
                    fill_s=fill_s,
                    update_ms_per_post=update_ms,
                    topk_ms=topk_ms,
                    refit_ms=refit_ms(documents, repeats=max(1, min(3, 10**5 // size))),
                )
            )
            print_row(results[-1])
    return results


def print_row(result: SizeResult) -> None:
    print(
        f"size={result.size:>7} posts_after={result.posts:>7} users={result.users:>5} terms={result.terms:>6} "
        f"fill={result.fill_s:7.1f}s "
        f"update={result.update_ms_per_post:7.3f}ms/post topk32={result.topk_ms:7.2f}ms "
        f"refit={result.refit_ms:9.1f}ms speedup={result.speedup:9.0f}x",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profiles", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", metavar="URL", help="database to fill (default: SQLite in a temp dir)")
    parser.add_argument(
        "--sizes",
        default="1000,10000,100000",
        type=lambda value: [int(size) for size in value.split(",")],
        help="corpus sizes in posts, comma-separated (default: 1000,10000,100000)",
    )
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per measure (default: 15)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default: 0)")
    args = parser.parse_args(argv)
    with scratch_database(args.db) as url:
        print(f"store: {url.split('?')[0]}  (search_path in a scratch schema on PostgreSQL)", flush=True)
        results = run(url, args.sizes, args.repeats, args.seed)
    small, large = results[0], results[-1]
    print(
        f"update_growth_1e5_vs_1e3={large.update_ms_per_post / small.update_ms_per_post:.2f} "
        f"topk_ms_1e5={large.topk_ms:.2f} speedup_vs_refit_1e5={large.speedup:.0f}"
    )


if __name__ == "__main__":
    main()
