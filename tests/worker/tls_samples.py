"""TLS for tests: throwaway certificate authorities and certificates (the openssl command line), and
Debian's stunnel as a real TLS terminator in front of a plain-TCP broker."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")  # fast to make, unlike RSA
SERVER_NAMES = "subjectAltName=IP:127.0.0.1,DNS:localhost"


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate it signed for 127.0.0.1/localhost, a client certificate it signed,
    and a second CA that signed nothing here (the one a client must not trust the server by)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", *KEY, "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", key, "-out", cert)
    return cert, key


def _signed(directory: Path, name: str, ca: tuple[Path, Path], extension: str | None) -> tuple[Path, Path]:
    cert, key, request = directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}.csr"
    _openssl("req", *KEY, "-nodes", "-subj", f"/CN={name}", "-keyout", key, "-out", request)
    extra: list[str | Path] = []
    if extension is not None:
        ext_file = directory / f"{name}.ext"
        ext_file.write_text(extension + "\n")
        extra = ["-extfile", ext_file]
    _openssl("x509", "-req", "-in", request, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-days", "2",
             "-out", cert, *extra)
    return cert, key


def make_pki(directory: Path) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "test-ca")
    server = _signed(directory, "server", ca, SERVER_NAMES)
    client = _signed(directory, "client", ca, None)
    other_ca, _ = _ca(directory, "other-ca")
    return Pki(ca[0], server[0], server[1], client[0], client[1], other_ca)


class TlsTerminator:
    """Debian's stunnel in front of a plain-TCP port: TLS with ``cert``/``key`` on ``port``, forwarded to
    ``target_port``; with ``client_ca`` it also requires a client certificate that CA signed."""

    def __init__(self, port: int, target_port: int, cert: Path, key: Path, workdir: Path, client_ca: Path | None = None) -> None:
        self.port = port
        config = [
            "foreground = yes",
            "pid =",
            f"output = {workdir / 'stunnel.log'}",
            "debug = 5",
            "[kafka]",
            f"accept = 127.0.0.1:{port}",
            f"connect = 127.0.0.1:{target_port}",
            f"cert = {cert}",
            f"key = {key}",
        ]
        if client_ca is not None:
            config += [f"CAfile = {client_ca}", "verifyChain = yes", "requireCert = yes"]
        self._config = workdir / "stunnel.conf"
        self._config.write_text("\n".join(config) + "\n")
        self.log = workdir / "stunnel.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> TlsTerminator:
        binary = shutil.which("stunnel4") or shutil.which("stunnel")
        if binary is None:
            pytest.skip("stunnel is not installed (Debian package stunnel4; .ci/run installs it)")
        self.process = subprocess.Popen([binary, str(self._config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"stunnel exited with {self.process.returncode}: {self.log.read_text()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"stunnel did not listen on {self.port}")

    def __exit__(self, *exc_info) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
