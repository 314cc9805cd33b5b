"""`uapt demo`: the whole service on the embedded defaults, end to end, in one process.

Broker (Tansu, in memory) -> synthetic users with different posting histories
-> their train posts folded into a temporary SQLite profile store -> new posts
published as events -> a worker thread captions them -> each user's keywords and
suggestions printed -> everything stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from model.config import decoding_field
from model.errors import ModelError
from model.training.train_config import METRICS_FILE
from worker.commands import quiet_kafka
from worker.settings import SettingsError

log = logging.getLogger(__name__)

DEMO_GROUP = "uapt-demo"

UNTRAINED_DATA = {"users": 8, "posts_per_user": 20, "seed": 0}
"""Synthetic users for a run without a checkpoint that says which users it was trained on."""

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "demo-offline"
"""The trained offline-preset checkpoint committed with the repository (float16, 17 MB)."""


def demo_data(checkpoint: str | None) -> dict[str, int]:
    """The synthetic dataset a checkpoint was trained on (its metrics.json "data"), so the demo
    folds the same users' train posts and publishes their held-out test posts: a user's style
    depends on all three numbers, so the checkpoint only knows these users with exactly these values."""
    metrics = Path(checkpoint) / METRICS_FILE if checkpoint else None
    if metrics is not None and metrics.is_file():
        data = json.loads(metrics.read_text(encoding="utf-8")).get("data")
        if data:
            return {key: int(data[key]) for key in ("users", "posts_per_user", "seed")}
    return dict(UNTRAINED_DATA)


def default_checkpoint(preset: str, checkpoint: str | None, untrained: bool) -> str | None:
    """The checkpoint the demo runs: the one asked for, else the demo checkpoint for `offline`."""
    if checkpoint or untrained or preset != "offline" or not DEMO_CHECKPOINT.is_dir():
        return checkpoint
    return str(DEMO_CHECKPOINT)


class DemoError(RuntimeError):
    """The demo could not finish (for instance no caption arrived in time)."""


def run_demo(
    *,
    preset: str,
    checkpoint: str | None,
    device: str,
    users: int,
    posts_per_user: int,
    seed: int | None,
    timeout_s: float,
    image_word_weight: float | None = None,
) -> int:
    from model.data.dataset import load_posts
    from model.data.synth import write_dataset
    from profiles import Post
    from profiles.store import ProfileStore
    from worker.broker import EmbeddedBroker
    from worker.events import post_event
    from worker.kafka_io import ensure_worker_topics, make_consumer, make_producer
    from worker.service import load_captioner, run_worker
    from worker.settings import Settings

    data = demo_data(checkpoint)
    if seed is not None:
        data["seed"] = seed
    if not 1 <= users <= data["users"] or posts_per_user < 1:
        raise DemoError(f"--users must be 1..{data['users']} and --posts-per-user at least 1")
    with tempfile.TemporaryDirectory(prefix="uapt-demo-") as tmp, EmbeddedBroker() as broker:
        workdir = Path(tmp)
        settings = Settings(
            bootstrap_servers=broker.bootstrap_servers,
            group_id=DEMO_GROUP,
            database_url=f"sqlite:///{workdir / 'profiles.db'}",
            preset=preset,
            checkpoint=checkpoint,
            device=device,
            image_root=workdir / "data",
            metrics_port=-1,
            batch_size=8,
            image_word_weight=image_word_weight,
        )
        print(f"demo: broker on {broker.bootstrap_servers}, profiles in {workdir / 'profiles.db'}", flush=True)

        # only the new (test) posts are published, so only their pictures are drawn: seconds, not a minute
        records = load_posts(write_dataset(workdir / "data", **data, image_splits={"test"}), require_images=False)
        # every user's history, not only the shown ones': TF-IDF weights depend on all users,
        # and the keywords must be the ones the checkpoint was trained with
        store = ProfileStore(settings.database_url)
        try:
            folded = store.add_posts([Post(r.post_id, r.user_id, r.text) for r in records if r.split == "train"])
        finally:
            store.close()
        shown = sorted({r.user_id for r in records})[:users]
        records = [r for r in records if r.user_id in shown]
        print(f"demo: {folded} past posts of {data['users']} synthetic users folded into their profiles; "
              f"showing {users} of them", flush=True)

        _hide_library_progress_bars()
        captioner = _with_status_line(f"loading model preset {preset!r}", lambda: load_captioner(settings))
        ensure_worker_topics(settings)

        new_posts = _pick_new_posts(records, posts_per_user)
        stop = threading.Event()
        worker = threading.Thread(target=run_worker, args=(settings,), kwargs={"captioner": captioner, "stop": stop}, name="uapt-worker")
        worker.start()
        try:
            producer = make_producer(settings.bootstrap_servers, security=settings.kafka_security)
            for r in new_posts:
                relative = str(r.image.relative_to(settings.image_root))
                value = post_event(r.post_id, r.user_id, image_path=relative, text=r.text)
                producer.send(settings.input_topic, key=r.user_id.encode(), value=value)
            producer.flush()
            producer.close()
            print(f"demo: published {len(new_posts)} new posts; waiting for captions", flush=True)
            results = _collect(settings, {r.post_id for r in new_posts}, timeout_s, make_consumer)
        finally:
            stop.set()
            worker.join(timeout=60)
        _print_results(new_posts, results)
    return 0


def _pick_new_posts(records, per_user: int) -> list:
    by_user = defaultdict(list)
    for r in records:
        if r.split == "test":
            by_user[r.user_id].append(r)
    return [r for user in sorted(by_user) for r in by_user[user][:per_user]]


def _collect(settings, wanted: set[str], timeout_s: float, make_consumer) -> dict[str, dict]:
    consumer = make_consumer(settings.bootstrap_servers, None, security=settings.kafka_security)
    consumer.subscribe([settings.output_topic])
    results: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while not wanted <= results.keys():
            if time.monotonic() > deadline:
                raise DemoError(f"only {len(results)} of {len(wanted)} captions arrived within {timeout_s:.0f} s")
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    message = json.loads(record.value)
                    results[message["post_id"]] = message
    finally:
        consumer.close()
    return results


def _print_results(new_posts, results: dict[str, dict]) -> None:
    current_user = None
    for post in new_posts:
        message = results[post.post_id]
        if post.user_id != current_user:
            current_user = post.user_id
            print(f"\n{post.user_id}   keywords: {', '.join(message['keywords']) or '(none)'}")
        print(f"  {post.post_id} ({message['latency_ms']:.0f} ms)   they wrote: {post.text}")
        if message.get("abstained"):
            print(f"      no suggestion ({message['reason']}: OOD score {message['ood_score']:.3f}, confidence {message['confidence']:.2f})")
        for caption in message["captions"]:
            print(f"      {caption['score']:7.2f}  {' '.join(caption['text'].split())}")
    model_id = next(iter(results.values()))["model"]
    print(f"\nmodel: {model_id}")
    if model_id.endswith(":untrained"):
        print("note: the prefix networks are untrained, so the captions are not meaningful yet; "
              "train them ('uapt train') and pass --checkpoint.")


def _hide_library_progress_bars() -> None:
    """The demo shows one status line of its own instead of the model libraries' progress bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _with_status_line(label: str, work):
    """Run ``work()`` while a status line shows the elapsed seconds (a plain line when not a terminal)."""
    done = threading.Event()
    started = time.monotonic()
    stream = sys.stderr

    def tick() -> None:
        while not done.wait(1.0):
            stream.write(f"\r{label}... {time.monotonic() - started:.0f} s")
            stream.flush()

    if stream.isatty():
        threading.Thread(target=tick, daemon=True).start()
    else:
        print(f"{label}...", file=stream, flush=True)
    try:
        return work()
    finally:
        done.set()
        print(f"\r{label}: done in {time.monotonic() - started:.1f} s", file=stream, flush=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `demo` to the `uapt` parser."""
    parser = subparsers.add_parser(
        "demo",
        help="the whole pipeline in one command: broker, worker, sample users, captions",
        description=(
            "Start the embedded broker, make sample posts for a few users with different "
            "histories (synthetic dataset), fold their history into a temporary SQLite profile "
            "store, publish new posts, run the worker and print each user's suggested captions "
            "next to their keywords. Stops everything and exits 0."
        ),
    )
    parser.add_argument("--preset", default="offline", help="model preset: offline (default) or tiny (fast, random)")
    parser.add_argument(
        "--checkpoint",
        default=os.environ.get("UAPT_CHECKPOINT"),
        help="trained checkpoint directory [env UAPT_CHECKPOINT; default for the offline preset: "
        "checkpoints/demo-offline, trained on the demo's synthetic users]",
    )
    parser.add_argument("--untrained", action="store_true", help="run the untrained prefix networks instead")
    parser.add_argument("--device", default="auto", help="torch device (default: auto)")
    parser.add_argument(
        "--users", type=int, default=3, help="sample users shown, of the checkpoint's synthetic ones (default: 3)"
    )
    parser.add_argument(
        "--posts-per-user", type=int, default=3, help="held-out (test) posts published per user (default: 3)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the synthetic data (default: the one the checkpoint was trained on, from its metrics.json; "
        "another seed makes users it has never seen)",
    )
    weight = decoding_field("image_word_weight")
    parser.add_argument("--image-word-weight", type=float, default=weight.default, help=weight.metadata["help"])
    parser.add_argument("--timeout-s", type=float, default=600, help="give up after this many seconds (default: 600)")
    parser.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    # The GGUF loader draws a plain tqdm bar; tqdm reads this variable when it is first imported.
    os.environ.setdefault("TQDM_DISABLE", "1")
    quiet_kafka()
    root = logging.getLogger()
    if root.level > logging.DEBUG:  # the printed table is the demo's output; --log-level DEBUG shows the rest
        root.setLevel(logging.WARNING)
    try:
        return run_demo(
            preset=args.preset,
            checkpoint=default_checkpoint(args.preset, args.checkpoint, args.untrained),
            device=args.device,
            users=args.users,
            posts_per_user=args.posts_per_user,
            seed=args.seed,
            timeout_s=args.timeout_s,
            image_word_weight=args.image_word_weight,
        )
    except (DemoError, ModelError, SettingsError) as exc:
        raise SystemExit(f"uapt demo: {exc}") from None
