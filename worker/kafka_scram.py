"""SCRAM logins that a broker refuses end as refused logins in kafka-python, not as a retried crash.

A SCRAM server may refuse a login in its last message with an RFC 5802
``e=<reason>`` attribute (``e=unknown-user``, ``e=invalid-proof``) and a
protocol-level success code; Tansu does so. kafka-python 3.0.12's SCRAM client
looks only for the ``v=`` signature and fails with ``KeyError('v')``, which its
connection manager takes for a network fault and retries until the bootstrap
times out. This mechanism turns that message into SaslAuthenticationFailedError,
which kafka-python remembers as an authentication failure and raises at once.
"""

from __future__ import annotations

from kafka.errors import SaslAuthenticationFailedError
from kafka.net.sasl import register_sasl_mechanism
from kafka.net.sasl.scram import SaslMechanismScram

SERVER_FINAL = 1  # kafka-python's state while it waits for the server-final-message


class RefusalAwareScram(SaslMechanismScram):
    """kafka-python's SCRAM mechanism, reading the server's error attribute before its signature."""

    def receive(self, auth_bytes: bytes) -> bool:
        if self._state == SERVER_FINAL and auth_bytes.startswith(b"e="):
            reason = auth_bytes[2:].split(b",", 1)[0].decode("utf-8", "replace")
            raise SaslAuthenticationFailedError(f"the broker refused the {self.mechanism} login: {reason}")
        return super().receive(auth_bytes)


def install() -> None:
    """Use this mechanism for every SCRAM login of the process's Kafka clients (idempotent)."""
    for name in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        register_sasl_mechanism(name, RefusalAwareScram, overwrite=True)
