"""Subcommands of `uapt` that belong to the worker: broker, worker, publish, tail, demo."""

from __future__ import annotations

import argparse
import logging
import os

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `uapt` parser."""
    _register_broker(subparsers)
    _register_worker(subparsers)
    _register_publish(subparsers)
    _register_tail(subparsers)
    _register_demo(subparsers)


def _bootstrap_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("UAPT_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP),
        help=f"Kafka bootstrap servers [env UAPT_BOOTSTRAP_SERVERS; default: {DEFAULT_BOOTSTRAP}]",
    )


def _quiet_kafka() -> None:
    """kafka-python logs every connection at INFO; keep the worker's own log readable."""
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))


# --- broker ---------------------------------------------------------------------------------


def _register_broker(subparsers) -> None:
    parser = subparsers.add_parser(
        "broker",
        help="run the embedded Kafka-protocol broker (Tansu, in memory) for development",
        description=(
            "Run the embedded Tansu broker on 127.0.0.1 until Ctrl-C. Everything is kept in "
            "memory and lost on exit; production uses Apache Kafka."
        ),
    )
    parser.add_argument("--port", type=int, default=9092, help="port to listen on (default: 9092)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on and advertise (default: 127.0.0.1)")
    parser.set_defaults(func=_run_broker)


def _run_broker(args: argparse.Namespace) -> int:
    import signal
    import threading

    from worker.broker import BrokerError, EmbeddedBroker

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        with EmbeddedBroker(port=args.port, host=args.host) as broker:
            print(f"broker: listening on {broker.bootstrap_servers} (Ctrl-C stops it)", flush=True)
            while not stop.wait(0.5):
                if broker.process is None or broker.process.poll() is not None:
                    raise SystemExit("uapt broker: tansu exited unexpectedly")
    except BrokerError as exc:
        raise SystemExit(f"uapt broker: {exc}") from None
    return 0


# --- worker ---------------------------------------------------------------------------------


def _register_worker(subparsers) -> None:
    from worker.settings import add_settings_arguments

    parser = subparsers.add_parser(
        "worker",
        help="consume new-post events and publish personalized caption suggestions",
        description=(
            "Consume uapt.post/1 events, caption each image for its user (UAPT), publish "
            "uapt.caption/1 messages, fold the post's text into the user's TF-IDF profile, "
            "then commit. Bad events go to the dead-letter topic. SIGTERM/SIGINT finish the "
            "current batch and exit 0. Serves /metrics, /healthz and /readyz."
        ),
    )
    add_settings_arguments(parser)
    parser.set_defaults(func=_run_worker)


def _run_worker(args: argparse.Namespace) -> int:
    from worker.service import run_worker
    from worker.settings import settings_from_args

    settings = settings_from_args(args)
    _quiet_kafka()
    try:
        return run_worker(settings)
    except Exception as exc:
        if _is_user_error(exc):
            raise SystemExit(f"uapt worker: {str(exc).splitlines()[0]}") from None
        raise


def _is_user_error(exc: Exception) -> bool:
    """Configuration mistakes (bad preset, checkpoint, database URL, unreachable broker or database)
    get one line, not a traceback."""
    from kafka.errors import KafkaError
    from sqlalchemy.exc import ArgumentError, OperationalError

    return isinstance(exc, (ValueError, FileNotFoundError, KafkaError, ArgumentError, OperationalError))


# --- publish --------------------------------------------------------------------------------


def _register_publish(subparsers) -> None:
    parser = subparsers.add_parser(
        "publish",
        help="publish new-post events for image files or URLs",
        description=(
            "Publish one uapt.post/1 event per IMAGE (a local file, sent inline as base64, or "
            "an http(s) URL the worker fetches) for user --user. Prints each post id."
        ),
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image file or http(s) URL")
    parser.add_argument("--user", required=True, help="user id the posts belong to (also the Kafka key)")
    parser.add_argument("--text", default="", help="words the user wrote with the post (folded into their profile)")
    parser.add_argument("--num-captions", type=int, default=None, help="captions wanted per post (default: the worker's)")
    parser.add_argument("--topic", default=os.environ.get("UAPT_INPUT_TOPIC", "uapt.posts"), help="input topic [env UAPT_INPUT_TOPIC; default: uapt.posts]")
    _bootstrap_flag(parser)
    parser.set_defaults(func=_run_publish)


def _run_publish(args: argparse.Namespace) -> int:
    import uuid

    from kafka.errors import KafkaError

    from worker.events import image_reference, post_event
    from worker.kafka_io import make_producer

    try:
        events = [
            (f"post-{uuid.uuid4().hex[:12]}", image_reference(image)) for image in args.images
        ]
    except ValueError as exc:
        raise SystemExit(f"uapt publish: {exc}") from None
    _quiet_kafka()
    try:
        producer = make_producer(args.bootstrap_servers)
        for post_id, image in events:
            value = post_event(post_id, args.user, text=args.text, num_captions=args.num_captions, **image)
            producer.send(args.topic, key=args.user.encode(), value=value).get(timeout=30)
            print(post_id, flush=True)
        producer.close(timeout=10)
    except KafkaError as exc:
        raise SystemExit(f"uapt publish: cannot publish to {args.bootstrap_servers}: {exc}") from None
    return 0


# --- tail -----------------------------------------------------------------------------------


def _register_tail(subparsers) -> None:
    parser = subparsers.add_parser(
        "tail",
        help="print caption suggestions as they arrive",
        description="Print each uapt.caption/1 message of the output topic as it arrives (Ctrl-C stops).",
    )
    parser.add_argument("--topic", default=os.environ.get("UAPT_OUTPUT_TOPIC", "uapt.captions"), help="output topic [env UAPT_OUTPUT_TOPIC; default: uapt.captions]")
    parser.add_argument("--from-beginning", action="store_true", help="start at the oldest message instead of the newest")
    parser.add_argument("--json", action="store_true", help="print the raw JSON messages")
    parser.add_argument("--max-messages", type=int, default=None, help="exit after this many messages")
    parser.add_argument("--timeout-s", type=float, default=None, help="exit after this many seconds without a message")
    _bootstrap_flag(parser)
    parser.set_defaults(func=_run_tail)


def _run_tail(args: argparse.Namespace) -> int:
    import json
    import time

    from kafka.errors import KafkaError

    from worker.kafka_io import make_consumer

    _quiet_kafka()
    try:
        consumer = make_consumer(
            args.bootstrap_servers, None, auto_offset_reset="earliest" if args.from_beginning else "latest"
        )
        consumer.subscribe([args.topic])
        seen, last = 0, time.monotonic()
        while args.max_messages is None or seen < args.max_messages:
            polled = consumer.poll(timeout_ms=500)
            for records in polled.values():
                for record in records:
                    print(record.value.decode("utf-8", "replace") if args.json else format_caption(json.loads(record.value)), flush=True)
                    seen += 1
                    last = time.monotonic()
            if args.timeout_s is not None and time.monotonic() - last > args.timeout_s:
                break
        consumer.close()
    except KafkaError as exc:
        raise SystemExit(f"uapt tail: cannot read {args.topic} from {args.bootstrap_servers}: {exc}") from None
    return 0


def format_caption(message: dict) -> str:
    """One caption message as a few readable lines."""
    keywords = ", ".join(message.get("keywords") or []) or "(no profile yet)"
    lines = [f"{message['user_id']} / {message['post_id']}  keywords: {keywords}"]
    lines += [f"    {c['score']:8.3f}  {' '.join(c['text'].split())}" for c in message["captions"]]
    return "\n".join(lines)


# --- demo -----------------------------------------------------------------------------------


def _register_demo(subparsers) -> None:
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
    parser.add_argument("--users", type=int, default=3, help="sample users shown, of the 8 synthetic ones (default: 3)")
    parser.add_argument(
        "--posts-per-user", type=int, default=2, help="held-out posts published per user, at most 3 (default: 2)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the synthetic data (default: 0, the users the demo checkpoint was trained on; "
        "another seed makes users it has never seen)",
    )
    parser.add_argument("--timeout-s", type=float, default=600, help="give up after this many seconds (default: 600)")
    parser.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    # The GGUF loader draws a plain tqdm bar; tqdm reads this variable when it is first imported.
    os.environ.setdefault("TQDM_DISABLE", "1")
    from worker.demo import DemoError, default_checkpoint, run_demo

    _quiet_kafka()
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
        )
    except (DemoError, ValueError) as exc:
        raise SystemExit(f"uapt demo: {exc}") from None
