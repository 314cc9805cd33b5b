"""Shared fixtures for the worker tests: a fake captioner, a profile store, a per-session Tansu broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from worker_samples import FakeCaptioner


@pytest.fixture
def fake_captioner() -> FakeCaptioner:
    return FakeCaptioner()


@pytest.fixture
def store(tmp_path):
    from profiles.store import ProfileStore

    store = ProfileStore(f"sqlite:///{tmp_path / 'profiles.db'}")
    yield store
    store.close()


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """A real embedded Tansu broker for the whole session; yields its bootstrap address."""
    from worker.broker import EmbeddedBroker

    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap_servers


@pytest.fixture
def topics(broker) -> dict[str, str]:
    """Unique input/output/DLQ topic names, created with 4 partitions each."""
    from worker.kafka_io import ensure_topics
    from worker.kafka_security import KafkaSecurity

    tag = uuid.uuid4().hex[:8]
    names = {"input": f"posts-{tag}", "output": f"captions-{tag}", "dlq": f"dlq-{tag}"}
    ensure_topics(broker, names.values(), partitions=4, security=KafkaSecurity())
    return names


@pytest.fixture(scope="session")
def captioner():
    """The real model on the `tiny` preset (random weights, loads in seconds)."""
    from model.captioner import Captioner
    from model.factory import load_model

    return Captioner(load_model("tiny", device="cpu"))


@pytest.fixture
def worker_settings(broker, topics, tmp_path):
    """Settings for one in-process worker on this test's topics, SQLite store and image root."""
    from worker.settings import Settings

    (tmp_path / "images").mkdir()
    return Settings(
        bootstrap_servers=broker,
        input_topic=topics["input"],
        output_topic=topics["output"],
        dlq_topic=topics["dlq"],
        group_id=f"group-{uuid.uuid4().hex[:8]}",
        create_topics=False,
        database_url=f"sqlite:///{tmp_path / 'profiles.db'}",
        preset="tiny",
        metrics_port=0,
        image_root=tmp_path / "images",
        batch_size=8,
        linger_ms=100,
        num_captions=2,
    )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database (the production store) for one test, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    admin_dsn = "host=127.0.0.1 port=5432 user=postgres dbname=test"
    name = f"uapt_worker_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
