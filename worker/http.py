"""One small HTTP server thread: /metrics for Prometheus, /healthz and /readyz for the orchestrator."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)


@dataclass
class Readiness:
    """Set by the worker as it runs; /readyz answers 200 only when all hold."""

    model_loaded: bool = False
    consumer_assigned: bool = False
    database_reachable: bool = True  # false while the profile store waits out an outage
    broker_reachable: bool = True  # false while Kafka does not answer (worker/broker_watch.py)

    @property
    def ready(self) -> bool:
        return self.model_loaded and self.consumer_assigned and self.database_reachable and self.broker_reachable


class StatusServer:
    """Serves the metrics registry and the readiness flags on host:port (port 0 picks a free one)."""

    def __init__(self, metrics: WorkerMetrics, readiness: Readiness, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler_for(metrics, readiness))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="uapt-status-http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> StatusServer:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", *self._server.server_address[:2])
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler_for(metrics: WorkerMetrics, readiness: Readiness) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                if readiness.ready:
                    self._send(200, b"ready\n")
                else:
                    detail = (
                        f"model_loaded={readiness.model_loaded} consumer_assigned={readiness.consumer_assigned} "
                        f"database_reachable={readiness.database_reachable} broker_reachable={readiness.broker_reachable}\n"
                    )
                    self._send(503, detail.encode())
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # scrapes every few seconds would flood the log
            log.debug("%s " + format, self.address_string(), *args)

    return Handler
