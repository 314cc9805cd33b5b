"""uapt.forget/1 control events in the worker: placed among the batch's posts, applied in record order, replay-safe."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from loop_fakes import make_loop
from worker_samples import captions_by_post, good_posts, png_bytes, publish, read_topic, running_worker

from profiles import Post
from profiles.store import ProfileStore
from worker.events import forget_event, post_event
from worker.images import ImageLoader
from worker.processing import InputRecord, PendingForget, Processor
from worker.schemas import ForgetEvent, parse_event
from worker.settings import ImagePolicy

HISTORY = [Post("h1", "u", "sunset sunset harbour"), Post("h2", "v", "coffee")]


def stream() -> list[InputRecord]:
    """u posts, u is forgotten, u posts again; v posts; a forget keyed by another user is refused."""
    values = [
        (b"u", post_event("a", "u", image_bytes=png_bytes(), text="alpine lake")),
        (b"u", forget_event("u")),
        (b"u", post_event("b", "u", image_bytes=png_bytes(), text="bakery")),
        (b"v", post_event("c", "v", image_bytes=png_bytes(), text="cycling")),
        (b"someone-else", forget_event("v")),
    ]
    return [InputRecord("posts", 0, offset, value, key) for offset, (key, value) in enumerate(values)]


def state(store: ProfileStore) -> tuple:
    return store.stats(), store.top_keywords(["u", "v"], 100)


def test_a_forget_is_placed_after_the_posts_before_it(fake_captioner, store):
    store.add_posts(HISTORY)
    result = Processor(fake_captioner, store, ImageLoader(ImagePolicy()), top_k=3).process_batch(stream())

    assert [post.post_id for post in result.posts] == ["a", "b", "c"]
    assert result.forgets == [PendingForget("u", after_posts=1)]
    keywords = {json.loads(out.value)["post_id"]: json.loads(out.value)["keywords"] for out in result.outputs}
    assert keywords == {"a": ["sunset", "harbour"], "b": [], "c": ["coffee"]}  # b comes after u's forget: fresh
    assert result.failures == {"invalid_forget": 1}
    (letter,) = result.dead_letters
    assert dict(letter.headers)["reason"] == b"invalid_forget"


def test_the_checkpoint_orders_folds_and_forgets_after_the_flush(fake_captioner):
    loop, journal, *_ = make_loop(fake_captioner, stream())
    loop.run()
    assert journal[journal.index("flush"):] == [
        "flush", "add_posts", "forget_user:u", "add_posts", "commit", "consumer.close", "producer.close",
    ]


def test_a_batch_of_forgets_alone_erases(fake_captioner, store):
    store.add_posts(HISTORY)
    only = [InputRecord("posts", 0, 0, forget_event("u"), b"u")]
    loop, *_ = make_loop(fake_captioner, only, store=store)
    loop.run()
    assert store.stats().users == 1 and store.top_keywords(["u"], 5) == {"u": []}
    assert loop.metrics.registry.get_sample_value("uapt_erasures_total") == 1


def test_the_loop_folds_erases_then_folds_and_a_replay_ends_the_same(fake_captioner, store, tmp_path):
    store.add_posts(HISTORY)
    loop, *_ = make_loop(fake_captioner, stream(), store=store)
    loop.run()
    assert loop.metrics.registry.get_sample_value("uapt_erasures_total") == 1

    with ProfileStore(f"sqlite:///{tmp_path / 'rebuilt.db'}") as rebuilt:  # v's history and posts, u's post after
        rebuilt.add_posts([HISTORY[1], Post("b", "u", "bakery"), Post("c", "v", "cycling")])
        assert state(store) == state(rebuilt)

        # offsets not committed (a crash after the fold): the whole batch comes again
        replay, *_ = make_loop(fake_captioner, stream(), store=store)
        replay.run()
        assert state(store) == state(rebuilt)


@pytest.mark.integration
def test_through_the_broker_a_forget_erases_the_posts_before_it_and_not_after(worker_settings, captioner):
    before = good_posts(6, users=2, prefix="before")  # user0 and user1
    after = [(b"user0", post_event("after0", "user0", image_bytes=png_bytes(), text="volcano trip"))]
    publish(worker_settings.bootstrap_servers, worker_settings.input_topic, before + [(b"user0", forget_event("user0"))] + after)
    with running_worker(worker_settings, captioner) as worker:
        outputs = read_topic(worker_settings.bootstrap_servers, worker_settings.output_topic, until=lambda r: len(r) >= 7)
        deadline = time.monotonic() + 30
        while erasures(worker["port"]) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert erasures(worker["port"]) == 1
    assert len(captions_by_post(outputs)) == 7

    with ProfileStore(worker_settings.database_url, create=False) as live:
        found = live.top_keywords(["user0", "user1"], 10)
        assert [k.term for k in found["user0"]] == ["trip", "volcano"]  # only the post after the forget
        assert {k.term for k in found["user1"]} == {"coffee", "latte", "art"}
        assert live.stats().users == 2 and live.stats().posts == 4  # user1's 3 posts and after0


def erasures(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("uapt_erasures_total "))


@pytest.mark.integration
def test_publish_forget_command_keys_the_event_by_the_user(broker, topics, capsys):
    from cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(["publish-forget", "user7", "--topic", topics["input"], "--bootstrap-servers", broker])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"forget event for 'user7' at {topics['input']} partition ")
    (record,) = read_topic(broker, topics["input"], until=lambda r: len(r) >= 1)
    event = parse_event(record.value)
    assert record.key == b"user7" and isinstance(event, ForgetEvent) and event.user_id == "user7"

    with pytest.raises(SystemExit, match=r"^uapt publish-forget: USER must be a non-empty string"):
        main(["publish-forget", " ", "--topic", topics["input"], "--bootstrap-servers", broker])
