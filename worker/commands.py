"""Subcommands of `uapt` that belong to the worker: broker, worker, publish, publish-forget, tail.

This is the command line's edge: `uapt --help` imports it, so the handlers
import kafka, SQLAlchemy, pydantic and torch (through the worker and the model)
only when they run. Topic and server defaults are the worker's `Settings`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid

from worker.broker import BrokerError, EmbeddedBroker
from worker.settings import (
    KAFKA_SECURITY_FIELDS,
    add_settings_arguments,
    default_of,
    env_var,
    kafka_security_from_args,
    settings_from_args,
)

CONFIGURATION_EXIT = 2  # as argparse's own usage errors

# The embedded broker listens where a worker looks by default.
BROKER_HOST, BROKER_PORT = default_of("bootstrap_servers").rsplit(":", 1)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `uapt` parser."""
    _register_broker(subparsers)
    _register_worker(subparsers)
    _register_publish(subparsers)
    _register_publish_forget(subparsers)
    _register_tail(subparsers)


def _setting_flag(parser: argparse.ArgumentParser, flag: str, name: str, help: str) -> None:
    """A flag for one worker setting: read from its UAPT_ variable, else the worker's default."""
    default = default_of(name)
    parser.add_argument(
        flag, default=os.environ.get(env_var(name), default), help=f"{help} [env {env_var(name)}; default: {default}]"
    )


def _bootstrap_flag(parser: argparse.ArgumentParser) -> None:
    """The broker address and the worker's Kafka security flags: a client command reaches the cluster as a worker does."""
    _setting_flag(parser, "--bootstrap-servers", "bootstrap_servers", "Kafka bootstrap servers")
    add_settings_arguments(
        parser, KAFKA_SECURITY_FIELDS, title=f"Kafka security (each flag also reads UAPT_<NAME>; password: {env_var('sasl_password')})"
    )


def _checked_security(command: str, args: argparse.Namespace):
    """The Kafka security settings, tried once against the broker; a mistake exits with one line."""
    from worker.errors import ConfigurationError
    from worker.kafka_io import check_broker

    try:
        security = kafka_security_from_args(args)
        check_broker(args.bootstrap_servers, security)
    except ConfigurationError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        raise SystemExit(CONFIGURATION_EXIT) from None
    return security


def quiet_kafka() -> None:
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
    parser.add_argument("--port", type=int, default=int(BROKER_PORT), help=f"port to listen on (default: {BROKER_PORT})")
    parser.add_argument(
        "--host", default=BROKER_HOST, help=f"address to listen on and advertise (default: {BROKER_HOST})"
    )
    parser.set_defaults(func=_run_broker)


def _run_broker(args: argparse.Namespace) -> int:
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

    quiet_kafka()
    try:
        return run_worker(settings_from_args(args))
    except Exception as exc:
        if not _is_configuration_error(exc):
            raise  # a bug: the traceback is what its finder needs (exit 1)
        orig = getattr(exc, "orig", None)  # a database error: the driver's words, without SQLAlchemy's wrapping
        detail = f"database error: {orig}" if orig is not None else str(exc)
        print(f"uapt worker: {detail.strip().splitlines()[0]}", file=sys.stderr)
        return CONFIGURATION_EXIT


def _is_configuration_error(exc: Exception) -> bool:
    """A configuration that can never work: one line and exit 2, not a traceback.

    These are the project's own error classes for bad settings, models, checkpoints and
    profile stores, a url SQLAlchemy cannot use, a database that refuses these credentials
    or does not exist, and a broker that cannot be reached. Database outages are not
    among them: the worker waits those out.
    """
    from kafka.errors import KafkaError
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    from model.assets import AssetMissing
    from model.checkpoint import CheckpointError
    from model.config import ConfigError
    from model.device import DeviceError
    from model.encoders import WeightsMismatch
    from model.factory import ModelUnavailable
    from profiles.errors import ProfilesError
    from profiles.outages import is_misconfigured
    from worker.errors import ConfigurationError

    model = (AssetMissing, CheckpointError, ConfigError, DeviceError, WeightsMismatch, ModelUnavailable)
    if isinstance(exc, (ConfigurationError, ProfilesError, *model, KafkaError, ArgumentError, NoSuchModuleError)):
        return True
    return isinstance(exc, DBAPIError) and is_misconfigured(exc)


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
    _setting_flag(parser, "--topic", "input_topic", "input topic")
    _bootstrap_flag(parser)
    parser.set_defaults(func=_run_publish)


def _run_publish(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from worker.events import image_reference, post_event
    from worker.kafka_io import make_producer

    try:
        events = [
            (f"post-{uuid.uuid4().hex[:12]}", image_reference(image)) for image in args.images
        ]
    except ValueError as exc:
        raise SystemExit(f"uapt publish: {exc}") from None
    quiet_kafka()
    security = _checked_security("uapt publish", args)
    try:
        producer = make_producer(args.bootstrap_servers, security=security)
        for post_id, image in events:
            value = post_event(post_id, args.user, text=args.text, num_captions=args.num_captions, **image)
            producer.send(args.topic, key=args.user.encode(), value=value).get(timeout=30)
            print(post_id, flush=True)
        producer.close(timeout=10)
    except KafkaError as exc:
        raise SystemExit(f"uapt publish: cannot publish to {args.bootstrap_servers}: {exc}") from None
    return 0


def _register_publish_forget(subparsers) -> None:
    parser = subparsers.add_parser(
        "publish-forget",
        help="publish a uapt.forget/1 event: the workers erase the user's profile, in order with their posts",
        description=(
            "Publish one uapt.forget/1 event for USER, keyed by USER so that it lands on the partition of the "
            "user's posts. The worker that owns it folds the user's posts before it, erases the user from the "
            "profile store, and starts a fresh profile with their posts after it. Prints where it landed. "
            "To erase from the store directly (no workers running): uapt profiles forget USER."
        ),
    )
    parser.add_argument("user", metavar="USER", help="user id to erase (also the Kafka key)")
    _setting_flag(parser, "--topic", "input_topic", "input topic")
    _bootstrap_flag(parser)
    parser.set_defaults(func=_run_publish_forget)


def _run_publish_forget(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from profiles import InvalidId, check_id
    from worker.events import forget_event
    from worker.kafka_io import make_producer

    try:
        check_id(args.user, "USER")
    except InvalidId as exc:
        raise SystemExit(f"uapt publish-forget: {exc}") from None
    quiet_kafka()
    security = _checked_security("uapt publish-forget", args)
    try:
        producer = make_producer(args.bootstrap_servers, security=security)
        landed = producer.send(args.topic, key=args.user.encode(), value=forget_event(args.user)).get(timeout=30)
        producer.close(timeout=10)
    except KafkaError as exc:
        raise SystemExit(f"uapt publish-forget: cannot publish to {args.bootstrap_servers}: {exc}") from None
    print(f"forget event for {args.user!r} at {args.topic} partition {landed.partition} offset {landed.offset}")
    return 0


# --- tail -----------------------------------------------------------------------------------


def _register_tail(subparsers) -> None:
    parser = subparsers.add_parser(
        "tail",
        help="print caption suggestions as they arrive",
        description="Print each uapt.caption/1 message of the output topic as it arrives (Ctrl-C stops).",
    )
    _setting_flag(parser, "--topic", "output_topic", "output topic")
    parser.add_argument("--from-beginning", action="store_true", help="start at the oldest message instead of the newest")
    parser.add_argument("--json", action="store_true", help="print the raw JSON messages")
    parser.add_argument("--max-messages", type=int, default=None, help="exit after this many messages")
    parser.add_argument("--timeout-s", type=float, default=None, help="exit after this many seconds without a message")
    _bootstrap_flag(parser)
    parser.set_defaults(func=_run_tail)


def _run_tail(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from worker.kafka_io import make_consumer

    quiet_kafka()
    security = _checked_security("uapt tail", args)
    try:
        consumer = make_consumer(
            args.bootstrap_servers,
            None,
            security=security,
            auto_offset_reset="earliest" if args.from_beginning else "latest",
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
