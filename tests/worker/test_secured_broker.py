"""The worker and the client commands against secured brokers: TLS by Debian's stunnel in front of the
embedded Tansu broker, SASL/SCRAM logins checked by Tansu itself (``--authentication``).

What these servers can and cannot show: Tansu 0.6.0 provisions SCRAM users only through a client that
is already logged in, and its memory-only build loses them on restart, so no login can succeed here:
every SASL case is a login Tansu refuses (as an unknown user). A successful login is left to a real
Apache Kafka cluster; the arguments it would get are checked in test_kafka_security.py.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from tls_samples import TlsTerminator, make_pki
from worker_samples import captions_by_post, good_posts, publish, read_topic, running_worker, wait_ready

from worker.broker import EmbeddedBroker, free_port
from worker.kafka_io import check_broker, ensure_topics
from worker.kafka_security import KafkaSecurity, KafkaSecurityError, Secret
from worker.settings import Settings

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-that-must-not-show"
FAIL_FAST_S = 10.0  # the check gives a silent broker 15 s (CHECK_TIMEOUT_S); a refusal must end it well before


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mutual_tls_broker(pki, tmp_path_factory) -> Iterator[str]:
    """Tansu behind stunnel, which requires a client certificate signed by the test CA."""
    tls_port = free_port()
    with EmbeddedBroker(advertised_port=tls_port) as broker, TlsTerminator(
        tls_port, broker.port, pki.server_cert, pki.server_key, tmp_path_factory.mktemp("stunnel"), client_ca=pki.ca
    ):
        yield broker.bootstrap_servers


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[str]:
    with EmbeddedBroker(authentication=True) as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="module")
def sasl_tls_broker(pki, tmp_path_factory) -> Iterator[str]:
    """An authenticating Tansu behind stunnel (server certificate only)."""
    tls_port = free_port()
    with EmbeddedBroker(authentication=True, advertised_port=tls_port) as broker, TlsTerminator(
        tls_port, broker.port, pki.server_cert, pki.server_key, tmp_path_factory.mktemp("stunnel-sasl")
    ):
        yield broker.bootstrap_servers


def test_a_worker_captions_posts_over_mutual_tls(pki, mutual_tls_broker, captioner, tmp_path):
    security = KafkaSecurity("SSL", ssl_cafile=pki.ca, ssl_certfile=pki.client_cert, ssl_keyfile=pki.client_key)
    tag = uuid.uuid4().hex[:8]
    topics = {"input_topic": f"posts-{tag}", "output_topic": f"captions-{tag}", "dlq_topic": f"dlq-{tag}"}
    ensure_topics(mutual_tls_broker, topics.values(), partitions=2, security=security)
    settings = Settings(
        bootstrap_servers=mutual_tls_broker,
        **topics,
        group_id=f"group-{tag}",
        create_topics=False,
        database_url=f"sqlite:///{tmp_path / 'profiles.db'}",
        preset="tiny",
        metrics_port=0,
        batch_size=4,
        linger_ms=100,
        num_captions=1,
        security_protocol="SSL",
        ssl_cafile=pki.ca,
        ssl_certfile=pki.client_cert,
        ssl_keyfile=pki.client_key,
    )
    posts = good_posts(4, prefix="tls")
    with running_worker(settings, captioner) as info:
        wait_ready(info["port"])
        publish(mutual_tls_broker, settings.input_topic, posts, security=security)
        outputs = read_topic(
            mutual_tls_broker, settings.output_topic, until=lambda r: len(captions_by_post(r)) >= 4, security=security
        )
    assert set(captions_by_post(outputs)) == {f"tls{i}" for i in range(4)}


def run_command(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """A `uapt` command in its own process: exit code, everything it printed, seconds it took."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def worker_args(bootstrap: str, tmp_path, *security: str) -> list[str]:
    return ["worker", "--bootstrap-servers", bootstrap, "--preset", "tiny", "--device", "cpu", "--metrics-port", "-1",
            "--no-create-topics", "--database-url", f"sqlite:///{tmp_path / 'profiles.db'}", *security]


def assert_one_line_exit_2(code: int, output: str, starts: str) -> str:
    assert code == 2, output
    assert "Traceback" not in output and PASSWORD not in output
    last = output.strip().splitlines()[-1]
    assert last.startswith(starts), output
    return last


@pytest.mark.slow  # a worker process: about 25 s on a busy 2-core machine; CI runs it
def test_an_untrusted_broker_certificate_stops_the_worker_at_once(pki, mutual_tls_broker, tmp_path):
    code, output, _ = run_command(
        *worker_args(mutual_tls_broker, tmp_path, "--security-protocol", "SSL", "--ssl-cafile", str(pki.other_ca))
    )
    assert_one_line_exit_2(
        code, output, f"uapt worker: TLS: the certificate of {mutual_tls_broker} is not trusted"
    )


@pytest.mark.parametrize(
    "mechanism", ["SCRAM-SHA-512", pytest.param("SCRAM-SHA-256", marks=pytest.mark.slow)]  # a worker process each
)
def test_a_refused_login_stops_the_worker_at_once_without_showing_the_password(mechanism, sasl_broker, tmp_path):
    code, output, _ = run_command(
        *worker_args(sasl_broker, tmp_path, "--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", mechanism,
                     "--sasl-username", "captioner"),
        env={"UAPT_SASL_PASSWORD": PASSWORD},
    )
    last = assert_one_line_exit_2(
        code, output, f"uapt worker: Kafka at {sasl_broker} refused the {mechanism} login"
    )
    assert "user 'captioner'" in last and "unknown-user" in last  # Tansu's own reason


@pytest.mark.slow  # a worker process: about 25 s on a busy 2-core machine; CI runs it
def test_a_refused_login_over_tls_reaches_the_broker_through_the_terminator(pki, sasl_tls_broker, tmp_path):
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    code, output, _ = run_command(
        *worker_args(sasl_tls_broker, tmp_path, "--security-protocol", "SASL_SSL", "--sasl-mechanism", "SCRAM-SHA-512",
                     "--sasl-username", "captioner", "--sasl-password-file", str(password_file),
                     "--ssl-cafile", str(pki.ca)),
    )
    assert_one_line_exit_2(
        code, output, f"uapt worker: Kafka at {sasl_tls_broker} refused the SCRAM-SHA-512 login"
    )


@pytest.mark.parametrize("command", [["tail"], ["publish-forget", "user0"]])
def test_client_commands_stop_at_a_refused_login_too(command, sasl_broker):
    code, output, _ = run_command(
        *command, "--bootstrap-servers", sasl_broker, "--security-protocol", "SASL_PLAINTEXT",
        "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "captioner",
        env={"UAPT_SASL_PASSWORD": PASSWORD},
    )
    assert_one_line_exit_2(code, output, f"uapt {command[0]}: Kafka at {sasl_broker} refused")


@pytest.mark.parametrize(
    ("broker", "security", "error"),
    [
        ("sasl_broker", lambda pki: KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "captioner", Secret(PASSWORD)), "refused the SCRAM-SHA-512 login"),
        ("mutual_tls_broker", lambda pki: KafkaSecurity("SSL", ssl_cafile=pki.other_ca), "is not trusted"),
    ],
)
def test_the_start_up_check_ends_at_the_first_refusal(broker, security, error, pki, request, caplog):
    """Not a retry until the check's 15 s are up (kafka-python alone retries both until its bootstrap times out);
    even kafka-python's DEBUG log of its configuration does not show the password."""
    caplog.set_level(logging.DEBUG)
    bootstrap = request.getfixturevalue(broker)
    started = time.monotonic()
    with pytest.raises(KafkaSecurityError, match=error) as refused:
        check_broker(bootstrap, security(pki))
    assert time.monotonic() - started < FAIL_FAST_S
    assert PASSWORD not in str(refused.value) and PASSWORD not in caplog.text
