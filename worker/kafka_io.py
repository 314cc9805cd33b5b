"""kafka-python clients configured to work alike on Apache Kafka and the embedded Tansu broker.

The short session and heartbeat times make a group join take ~3 s instead of
~23 s against Tansu; acks='all' and manual commits are what the
at-least-once promise rests on. Every client takes its SASL and TLS arguments
from `KafkaSecurity.client_config`, and `check_broker` tries them once at
start-up, so that a refused login or an untrusted certificate is one clear line
instead of a client retrying until its bootstrap times out.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
import uuid
from collections.abc import Iterable

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import (
    IllegalSaslStateError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)

from worker import kafka_scram
from worker.errors import ConfigurationError
from worker.kafka_security import MASK, KafkaSecurity, KafkaSecurityError
from worker.settings import Settings, default_of

log = logging.getLogger(__name__)
kafka_scram.install()

SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000
CHECK_TIMEOUT_S = 15.0  # the start-up check's whole budget: an operator waits at most this long for the verdict
ATTEMPT_MS = 3000  # one try of the check: long enough for a SCRAM login over a slow link, short enough to end soon
REFUSED_LOGIN = (SaslAuthenticationFailedError, UnsupportedSaslMechanismError, IllegalSaslStateError)


class BrokerUnreachable(ConfigurationError):
    """No broker answered at the bootstrap servers at start-up."""


class _MaskedPassword(logging.Filter):
    """kafka-python's admin client logs its whole configuration at DEBUG, the SASL password included."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args  # a lone dict argument is kept as the dict itself
        if isinstance(args, dict) and args.get("sasl_plain_password"):
            record.args = {**args, "sasl_plain_password": MASK}
        return True


logging.getLogger("kafka.admin.client").addFilter(_MaskedPassword())


def make_consumer(
    bootstrap_servers: str, group_id: str | None, *, security: KafkaSecurity, max_poll_records: int = 500, **extra
):
    """A consumer that never commits on its own; the loop commits after outputs and profiles are durable."""
    config = dict(
        bootstrap_servers=bootstrap_servers.split(","),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        max_poll_records=max_poll_records,
        fetch_max_wait_ms=100,
        client_id="uapt-worker",
        **security.client_config(),
    )
    config.update(extra)
    return KafkaConsumer(**config)


def make_producer(bootstrap_servers: str, *, security: KafkaSecurity, **extra):
    """A producer whose sends are acknowledged by all in-sync replicas."""
    config = dict(
        bootstrap_servers=bootstrap_servers.split(","),
        acks="all",
        linger_ms=5,
        retries=5,
        max_request_size=default_of("max_message_bytes"),
        client_id="uapt-worker",
        **security.client_config(),
    )
    config.update(extra)
    return KafkaProducer(**config)


def make_admin(bootstrap_servers: str, *, security: KafkaSecurity, **extra) -> KafkaAdminClient:
    """An admin client (topic creation, the start-up check)."""
    config = dict(bootstrap_servers=bootstrap_servers.split(","), client_id="uapt-admin", **security.client_config())
    config.update(extra)
    return KafkaAdminClient(**config)


def check_broker(bootstrap_servers: str, security: KafkaSecurity, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Connect once as the clients will; raise a ConfigurationError that says what is wrong, in one line.

    kafka-python 3.0.12 retries a failed TLS handshake and a refused login until its bootstrap times
    out, then says only "Unable to bootstrap". So the certificate is checked here first, with the
    clients' own TLS context, and the login is tried in short attempts, each of which ends the check
    if a connection of it was refused.
    """
    if security.uses_tls:
        _check_certificate(bootstrap_servers, security.ssl_context(), timeout_s)
    client_id = f"uapt-check-{uuid.uuid4().hex[:8]}"  # names the IO thread of this check's connections
    deadline = time.monotonic() + timeout_s
    with _RefusedLoginWatch(client_id) as watch:
        while watch.refusal is None:
            try:
                make_admin(
                    bootstrap_servers, security=security, client_id=client_id, bootstrap_timeout_ms=ATTEMPT_MS
                ).close()
                return
            except REFUSED_LOGIN as error:
                watch.refusal = error
            except KafkaTimeoutError:
                if time.monotonic() >= deadline:
                    break
    if watch.refusal is not None:
        raise KafkaSecurityError(
            f"Kafka at {bootstrap_servers} refused the {security.sasl_mechanism} login of user "
            f"{security.sasl_username!r} ({watch.refusal})"
        )
    raise BrokerUnreachable(
        f"no Kafka broker answered at {bootstrap_servers} over {security.security_protocol} within {timeout_s:g} s"
    )


class _RefusedLoginWatch(logging.Handler):
    """Notes the first connection of client ``client_id`` that kafka-python reports lost to a refused
    login: told by the error's class and the client's IO thread, not by the log text."""

    LOGGER = "kafka.net.connection"

    def __init__(self, client_id: str) -> None:
        super().__init__(logging.ERROR)
        self.thread_name = f"kafka-io-{client_id}"  # kafka-python's name for a client's IO thread
        self.refusal: Exception | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.threadName != self.thread_name or self.refusal is not None:
            return
        args = record.args if isinstance(record.args, tuple) else ()
        self.refusal = next((arg for arg in args if isinstance(arg, REFUSED_LOGIN)), None)

    def __enter__(self) -> _RefusedLoginWatch:
        logging.getLogger(self.LOGGER).addHandler(self)
        return self

    def __exit__(self, *exc_info) -> None:
        logging.getLogger(self.LOGGER).removeHandler(self)


def _check_certificate(bootstrap_servers: str, context: ssl.SSLContext, timeout_s: float) -> None:
    """A TLS handshake with the first bootstrap server that accepts a connection; one that cannot connect
    is left to the clients' own timeout, which says the broker cannot be reached."""
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
                with context.wrap_socket(sock, server_hostname=host):
                    return
        except ssl.SSLCertVerificationError as error:
            raise KafkaSecurityError(f"TLS: the certificate of {server} is not trusted ({error.verify_message})") from None
        except ssl.SSLError as error:
            raise KafkaSecurityError(f"TLS handshake with {server} failed ({error.reason or type(error).__name__})") from None
        except (OSError, ValueError):
            continue  # refused, unresolvable or not host:port: the next server, else the clients' own verdict


def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    partitions: int,
    replication_factor: int = 1,
    *,
    security: KafkaSecurity,
) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created."""
    admin = make_admin(bootstrap_servers, security=security)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            try:
                admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=replication_factor) for t in missing]
                )
            except TopicAlreadyExistsError:
                log.info("another client created some of %s first", missing)
            log.info("created topics %s with %d partitions, replication %d", missing, partitions, replication_factor)
        return missing
    finally:
        admin.close()


def ensure_worker_topics(settings: Settings) -> list[str]:
    """Create the worker's input, output and dead-letter topics as its settings size them."""
    return ensure_topics(
        settings.bootstrap_servers,
        [settings.input_topic, settings.output_topic, settings.dlq_topic],
        settings.partitions,
        settings.replication_factor,
        security=settings.kafka_security,
    )
