"""A PostgreSQL outage mid-stream, through the real broker: the worker waits (not ready), then goes on,
with every post captioned and folded once."""

from __future__ import annotations

import contextlib
import glob
import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from outage_proxy import CuttableProxy
from sqlalchemy.engine import make_url
from test_stream import scrape
from worker_samples import captions_by_post, good_posts, publish, read_topic, running_worker, wait_ready

from profiles import Post
from profiles.store import ProfileStore
from worker.broker import free_port

pytestmark = pytest.mark.integration


def readyz(port: int) -> tuple[int, str]:
    try:
        answer = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
        return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_not_ready(port: int, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, body = readyz(port)
        if status == 503:
            return body
        time.sleep(0.1)
    raise AssertionError("the worker never reported not-ready during the outage")


def pg_binary(name: str) -> str | None:
    """A PostgreSQL server program: on the PATH, or where Debian keeps it (off the PATH)."""
    debian = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))  # newest version last
    return shutil.which(name) or (debian[-1] if debian else None)


class PrivateCluster:
    """A PostgreSQL cluster of this test's own (initdb + pg_ctl on a free port in a temp dir), so it can be
    stopped and started without touching the machine's shared server; run as the postgres user under root."""

    def __init__(self, root: Path) -> None:
        self.data, self.port = root / "data", free_port()
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        self._run(pg_binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        self._options = f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._log = root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._run(pg_binary("pg_ctl"), "-D", str(self.data), "-o", self._options, "-l", str(self._log), "-w", "start")

    def stop(self) -> None:
        self._run(pg_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as, *command], check=True, capture_output=True, timeout=60)


@pytest.fixture
def private_cluster() -> Iterator[PrivateCluster]:
    if pg_binary("initdb") is None or pg_binary("pg_ctl") is None:
        pytest.skip("initdb/pg_ctl not installed")
    root = Path(tempfile.mkdtemp(prefix="uapt-pg-"))  # not under pytest's tmp: the postgres user must reach it
    try:
        cluster = PrivateCluster(root)
        cluster.start()
        yield cluster
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_worker_waits_out_a_database_outage(worker_settings, postgres_url, fake_captioner, tmp_path):
    """The outage is a cut TCP proxy in front of the shared server: connections drop, new ones are refused."""
    url = make_url(postgres_url)
    with CuttableProxy((url.host, url.port or 5432)) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        stream_through_an_outage(
            dataclasses.replace(worker_settings, database_url=proxied), fake_captioner, proxy.cut, proxy.restore
        )
    assert_profiles_equal_a_rebuild(postgres_url, tmp_path)


@pytest.mark.slow  # about 35 s; CI runs it
def test_worker_waits_out_a_postgres_restart(worker_settings, private_cluster, fake_captioner, tmp_path):
    """The outage is the server itself, stopped (fast shutdown: sessions terminated) and started again."""
    settings = dataclasses.replace(worker_settings, database_url=private_cluster.url)
    stream_through_an_outage(settings, fake_captioner, private_cluster.stop, private_cluster.start)
    assert_profiles_equal_a_rebuild(private_cluster.url, tmp_path)


BEFORE, DURING = good_posts(6, prefix="a"), good_posts(6, prefix="b")


def stream_through_an_outage(settings, captioner, go_down: Callable[[], None], come_back: Callable[[], None]) -> None:
    """Stream posts, take the database away for several seconds mid-stream, bring it back; the worker
    must report not-ready meanwhile, never exit, and caption every post once it can fold them."""
    with running_worker(settings, captioner) as info:  # asserts a clean exit 0 at the end
        port = info["port"]
        wait_ready(port)
        publish(settings.bootstrap_servers, settings.input_topic, BEFORE)
        read_topic(settings.bootstrap_servers, settings.output_topic, until=lambda r: len(captions_by_post(r)) >= 6)

        go_down()
        publish(settings.bootstrap_servers, settings.input_topic, DURING)
        assert "database_reachable=False" in wait_not_ready(port)
        time.sleep(3.0)  # several seconds of outage, with the worker holding its batch
        assert readyz(port)[0] == 503
        come_back()

        wait_ready(port, timeout_s=60)
        outputs = read_topic(settings.bootstrap_servers, settings.output_topic, until=lambda r: len(captions_by_post(r)) >= 12)
        metrics = scrape(port)

    assert set(captions_by_post(outputs)) == {f"a{i}" for i in range(6)} | {f"b{i}" for i in range(6)}
    assert sum(v for (name, _), v in metrics.items() if name == "uapt_db_retries_total") > 0
    assert metrics[("uapt_db_wait_seconds_total", ())] >= 2.0


def assert_profiles_equal_a_rebuild(url: str, tmp_path: Path) -> None:
    """Nothing lost, nothing counted twice: the served profiles equal a rebuild from scratch."""
    events = [json.loads(value) for _, value in BEFORE + DURING]
    users = sorted({event["user_id"] for event in events})
    rebuilt = ProfileStore(f"sqlite:///{tmp_path / 'rebuilt.db'}")
    served = ProfileStore(url, create=False)
    try:
        rebuilt.add_posts([Post(event["post_id"], event["user_id"], event["text"]) for event in events])
        assert served.stats() == rebuilt.stats()
        assert keywords(served, users) == keywords(rebuilt, users)
    finally:
        rebuilt.close()
        served.close()


def keywords(store: ProfileStore, users: list[str]) -> dict[str, list[tuple[str, float]]]:
    return {user: [(k.term, round(k.score, 9)) for k in found] for user, found in store.top_keywords(users, 5).items()}


@pytest.mark.slow  # about 40 s; CI runs it
def test_a_database_outage_longer_than_the_poll_interval_keeps_the_partitions(worker_settings, postgres_url, fake_captioner, tmp_path):
    """The outage lasts four max_poll_interval_ms: the worker holds its partitions (paused, still polling),
    so it never leaves the group, and no post is captioned twice or lost."""
    poll_interval_ms = 3000
    url = make_url(postgres_url)
    with CuttableProxy((url.host, url.port or 5432)) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        settings = dataclasses.replace(worker_settings, database_url=proxied, max_poll_interval_ms=poll_interval_ms)
        with running_worker(settings, fake_captioner) as info:
            port = info["port"]
            wait_ready(port)
            publish(settings.bootstrap_servers, settings.input_topic, BEFORE)
            read_topic(settings.bootstrap_servers, settings.output_topic, until=lambda r: len(captions_by_post(r)) >= 6)

            proxy.cut()
            publish(settings.bootstrap_servers, settings.input_topic, DURING)
            assert "database_reachable=False" in wait_not_ready(port)
            time.sleep(4 * poll_interval_ms / 1000)
            proxy.restore()

            wait_ready(port, timeout_s=60)
            read_topic(settings.bootstrap_servers, settings.output_topic, until=lambda r: len(captions_by_post(r)) >= 12)
            time.sleep(2.0)  # a replay, had there been one, would add its copies by now
            outputs = read_topic(settings.bootstrap_servers, settings.output_topic, until=lambda r: False, timeout_s=3)

    captioned = captions_by_post(outputs)
    assert set(captioned) == {f"a{i}" for i in range(6)} | {f"b{i}" for i in range(6)}
    assert {post: len(messages) for post, messages in captioned.items() if len(messages) > 1} == {}
    assert_profiles_equal_a_rebuild(postgres_url, tmp_path)
