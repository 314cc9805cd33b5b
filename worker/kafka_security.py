"""How the worker's Kafka clients prove who they are and check whom they talk to: SASL and TLS.

`KafkaSecurity.client_config` is the one place that turns these settings into
kafka-python keyword arguments; the consumer, producer and admin clients all
take theirs from it. Its checks refuse a combination that would quietly talk
plain text to a cluster the operator meant to secure (a username with
PLAINTEXT, a CA file with SASL_PLAINTEXT), and the password is a `Secret` that
prints as ``***`` wherever the settings end up: reprs, logs, error messages.

This module imports neither kafka nor the network: `uapt --help` reads the
settings that use it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.errors import ConfigurationError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
MASK = "***"


class KafkaSecurityError(ConfigurationError):
    """The Kafka security settings cannot work together, or a file they name is missing or unreadable."""


class Secret:
    """A string that prints as ``***`` (repr, str, f-strings); `reveal` is the only way to its value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class KafkaSecurity:
    """SASL and TLS settings of the Kafka clients; field names are the worker settings' own,
    so an error message names the setting (flag ``--ssl-cafile``, variable ``UAPT_SSL_CAFILE``)."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = field(default=None, repr=False)  # from UAPT_SASL_PASSWORD only
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    def __post_init__(self) -> None:
        if self.security_protocol not in PROTOCOLS:
            raise KafkaSecurityError(f"security_protocol must be one of {', '.join(PROTOCOLS)}, got {self.security_protocol!r}")
        if self.uses_sasl:
            self._check_sasl()
        else:
            self._refuse_set("SASL", ("sasl_mechanism", "sasl_username", "sasl_password", "sasl_password_file"))
        if self.uses_tls:
            self._check_tls_files()
        else:
            self._refuse_set("SSL", ("ssl_cafile", "ssl_certfile", "ssl_keyfile"))

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def _check_sasl(self) -> None:
        protocol = self.security_protocol
        if self.sasl_mechanism not in MECHANISMS:
            raise KafkaSecurityError(
                f"security_protocol {protocol} needs sasl_mechanism, one of {', '.join(MECHANISMS)}; got {self.sasl_mechanism!r}"
            )
        if not self.sasl_username:
            raise KafkaSecurityError(f"security_protocol {protocol} needs sasl_username")
        if (self.sasl_password is None) == (self.sasl_password_file is None):
            raise KafkaSecurityError(
                f"security_protocol {protocol} needs exactly one of sasl_password_file and the UAPT_SASL_PASSWORD variable"
            )
        if self.sasl_password_file is not None and not self.sasl_password_file.is_file():
            raise KafkaSecurityError(f"sasl_password_file {self.sasl_password_file} is not a file")
        if not self.password().reveal():
            raise KafkaSecurityError("the SASL password is empty")

    def _check_tls_files(self) -> None:
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise KafkaSecurityError(f"{name} {path} is not a file")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise KafkaSecurityError("ssl_keyfile needs ssl_certfile (the client certificate it belongs to)")

    def _refuse_set(self, kind: str, names: tuple[str, ...]) -> None:
        """A setting of a kind the protocol does not use is a mistake, not something to ignore."""
        for name in names:
            if getattr(self, name) is not None:
                raise KafkaSecurityError(f"{name} is set but security_protocol {self.security_protocol} uses no {kind}")

    def password(self) -> Secret:
        """The SASL password: the file's first line, or the UAPT_SASL_PASSWORD value."""
        if self.sasl_password_file is None:
            return self.sasl_password or Secret("")
        try:
            text = self.sasl_password_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise KafkaSecurityError(f"sasl_password_file {self.sasl_password_file}: cannot read it ({type(error).__name__})") from None
        lines = text.splitlines()
        return Secret(lines[0] if lines else "")

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context of every connection: the CA file (else the system's CAs), host names checked,
        and the client certificate when one is set."""
        try:
            context = ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
        except (ssl.SSLError, OSError) as error:
            raise KafkaSecurityError(f"ssl_cafile {self.ssl_cafile}: not a PEM CA certificate ({error.__class__.__name__})") from None
        if self.ssl_certfile is not None:
            try:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
            except (ssl.SSLError, OSError) as error:
                raise KafkaSecurityError(
                    f"ssl_certfile {self.ssl_certfile} / ssl_keyfile {self.ssl_keyfile}: "
                    f"cannot load the client certificate and key ({error.__class__.__name__})"
                ) from None
        return context

    def client_config(self) -> dict[str, Any]:
        """kafka-python keyword arguments for a consumer, producer or admin client."""
        config: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.uses_tls:
            config["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            config.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.password().reveal(),
            )
        return config
