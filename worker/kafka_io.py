"""kafka-python clients configured to work alike on Apache Kafka and the embedded Tansu broker.

The short session and heartbeat times make a group join take ~3 s instead of
~23 s (DESIGN.md section 7); acks='all' and manual commits are what the
at-least-once promise rests on. Every client takes its SASL and TLS arguments
from `KafkaSecurity.client_config`, and `check_broker` tries them once at
start-up, so that a refused login or an untrusted certificate is one clear line
instead of a client retrying until its bootstrap times out.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Iterable

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import (
    AuthorizationError,
    IllegalSaslStateError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)

from worker.errors import ConfigurationError
from worker.kafka_security import KafkaSecurity, KafkaSecurityError
from worker.settings import Settings, default_of

log = logging.getLogger(__name__)

SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000
CHECK_TIMEOUT_S = 15.0  # the start-up check's whole budget: an operator waits at most this long for the verdict
REFUSED_LOGIN = (SaslAuthenticationFailedError, UnsupportedSaslMechanismError, IllegalSaslStateError, AuthorizationError)


class BrokerUnreachable(ConfigurationError):
    """No broker answered at the bootstrap servers at start-up."""


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
    return KafkaAdminClient(
        bootstrap_servers=bootstrap_servers.split(","), client_id="uapt-admin", **security.client_config(), **extra
    )


def check_broker(bootstrap_servers: str, security: KafkaSecurity, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Connect once as the clients will; raise a ConfigurationError that says what is wrong, in one line.

    kafka-python retries a failed TLS handshake until its bootstrap times out and then says only
    "Unable to bootstrap", so the certificate is checked here first, with the clients' own TLS context.
    """
    if security.uses_tls:
        _check_certificate(bootstrap_servers, security.ssl_context(), timeout_s)
    try:
        admin = make_admin(bootstrap_servers, security=security, bootstrap_timeout_ms=int(timeout_s * 1000))
    except REFUSED_LOGIN as error:
        raise KafkaSecurityError(
            f"Kafka at {bootstrap_servers} refused the {security.sasl_mechanism} login of user "
            f"{security.sasl_username!r} ({type(error).__name__})"
        ) from None
    except KafkaTimeoutError:
        raise BrokerUnreachable(
            f"no Kafka broker answered at {bootstrap_servers} over {security.security_protocol} within {timeout_s:g} s"
        ) from None
    admin.close()


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
