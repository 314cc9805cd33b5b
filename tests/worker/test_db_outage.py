"""A PostgreSQL outage mid-stream, through the real broker: the worker waits (not ready), then goes on,
with every post captioned and folded once."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request

import pytest
from outage_proxy import CuttableProxy
from sqlalchemy.engine import make_url
from test_stream import scrape
from worker_samples import captions_by_post, good_posts, publish, read_topic, running_worker, wait_ready

from profiles import Post
from profiles.store import ProfileStore

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


def test_worker_waits_out_a_database_outage(worker_settings, postgres_url, fake_captioner, tmp_path):
    url = make_url(postgres_url)
    before, during = good_posts(6, prefix="a"), good_posts(6, prefix="b")
    with CuttableProxy((url.host, url.port or 5432)) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        settings = dataclasses.replace(worker_settings, database_url=proxied)
        with running_worker(settings, fake_captioner) as info:
            port = info["port"]
            wait_ready(port)
            publish(settings.bootstrap_servers, settings.input_topic, before)
            read_topic(settings.bootstrap_servers, settings.output_topic, until=lambda r: len(captions_by_post(r)) >= 6)

            proxy.cut()
            publish(settings.bootstrap_servers, settings.input_topic, during)
            assert "database_reachable=False" in wait_not_ready(port)
            time.sleep(3.0)  # several seconds of outage, with the worker holding its batch
            assert readyz(port)[0] == 503
            proxy.restore()

            wait_ready(port, timeout_s=60)
            outputs = read_topic(settings.bootstrap_servers, settings.output_topic, until=lambda r: len(captions_by_post(r)) >= 12)
            metrics = scrape(port)

    assert set(captions_by_post(outputs)) == {f"a{i}" for i in range(6)} | {f"b{i}" for i in range(6)}
    assert sum(v for (name, _), v in metrics.items() if name == "uapt_db_retries_total") > 0
    assert metrics[("uapt_db_wait_seconds_total", ())] >= 2.0

    # nothing lost, nothing counted twice: the profiles equal a rebuild from scratch
    events = [json.loads(value) for _, value in before + during]
    users = sorted({event["user_id"] for event in events})
    rebuilt = ProfileStore(f"sqlite:///{tmp_path / 'rebuilt.db'}")
    served = ProfileStore(postgres_url, create=False)
    try:
        rebuilt.add_posts([Post(event["post_id"], event["user_id"], event["text"]) for event in events])
        assert served.stats() == rebuilt.stats()
        assert keywords(served, users) == keywords(rebuilt, users)
    finally:
        rebuilt.close()
        served.close()


def keywords(store: ProfileStore, users: list[str]) -> dict[str, list[tuple[str, float]]]:
    return {user: [(k.term, round(k.score, 9)) for k in found] for user, found in store.top_keywords(users, 5).items()}
