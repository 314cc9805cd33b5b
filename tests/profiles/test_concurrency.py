"""Two processes folding disjoint users into one PostgreSQL store at once equal a serial run.

Both writers share most of their vocabulary, so nearly every transaction
increments df rows the other is incrementing too: a lost update or a deadlock
would show up as a different store or an exception in a writer. The writers
also open the store on an empty schema together, which exercises the
migration lock.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections.abc import Callable

import pytest
from profile_samples import dump_store

from profiles import Post
from profiles.store import ProfileStore

pytestmark = pytest.mark.integration

SHARED_WORDS = [f"word{i}" for i in range(40)]
BATCHES_PER_WRITER = 40
POSTS_PER_BATCH = 6


def writer_batches(prefix: str, seed: int) -> list[list[Post]]:
    """Posts of users ``{prefix}0..9`` drawn from the shared vocabulary (plus one private word each)."""
    rng = random.Random(seed)
    batches = []
    for batch_index in range(BATCHES_PER_WRITER):
        batch = []
        for post_index in range(POSTS_PER_BATCH):
            user = f"{prefix}{rng.randrange(10)}"
            words = [*rng.choices(SHARED_WORDS, k=rng.randint(3, 12)), f"{user}private"]
            batch.append(Post(f"{prefix}-{batch_index}-{post_index}", user, " ".join(words)))
        batches.append(batch)
    return batches


def write(url: str, prefix: str, seed: int, start, results) -> None:
    """One writer process: open the store, then fold its batches; reports its write interval or its error."""
    try:
        batches = writer_batches(prefix, seed)
        start.wait(timeout=60)
        with ProfileStore(url) as store:
            began = time.monotonic()
            for batch in batches:
                store.add_posts(batch)
            results.put(("ok", began, time.monotonic()))
    except BaseException as error:  # report everything: an escaped deadlock is exactly what we look for
        results.put(("error", f"{prefix}: {type(error).__name__}: {error}"))


def test_two_writers_equal_a_serial_run(
    pg_schema_url: Callable[[], str],
) -> None:
    writers = [("a", 1), ("b", 2)]
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(len(writers)), context.Queue()
    concurrent_url = pg_schema_url()
    processes = [
        context.Process(target=write, args=(concurrent_url, prefix, seed, start, results)) for prefix, seed in writers
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=240) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert [outcome for outcome in outcomes if outcome[0] != "ok"] == []
    (_, began_a, ended_a), (_, began_b, ended_b) = outcomes
    assert max(began_a, began_b) < min(ended_a, ended_b), "the writers did not overlap in time"

    serial_url = pg_schema_url()
    with ProfileStore(serial_url) as store:
        for prefix, seed in writers:
            for batch in writer_batches(prefix, seed):
                store.add_posts(batch)

    concurrent, serial = dump_store(concurrent_url), dump_store(serial_url)
    assert concurrent == serial
    assert serial["profile_corpus"] == [(1, 20)]
    assert max(df for _, df in serial["profile_terms"]) == 20  # shared words really are shared
