"""The worker's own small HTTP server: /health, /ready and /metrics on WORKER_PORT, for
liveness and readiness probes and Prometheus. The worker serves no API, so a standard
library server on one thread is enough."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import errors

log = logging.getLogger(__name__)

HEALTH_PATH = "/health"  # liveness: the process answers
READY_PATH = "/ready"  # readiness: S3, GCS and the queue answer now (and the ledger's state)
METRICS_PATH = "/metrics"
PATHS = (HEALTH_PATH, READY_PATH, METRICS_PATH)  # every other path is a 404


def serve(
    port: int,
    ready: Callable[[], dict[str, Any]],
    identities: Callable[[], dict[str, Any]] = dict,
) -> ThreadingHTTPServer:
    """Start serving on 0.0.0.0:`port` in a daemon thread. `ready` raises StartupError when
    a cloud or the queue does not answer, else returns what /ready reports besides its status
    (the ledger's state, as the service's /ready). /health reports `identities()`: which
    identity each side uses, never a secret."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == HEALTH_PATH:
                body = json.dumps({"status": "ok", "identities": identities()}).encode()
                self._send(200, "application/json", body)
            elif self.path == READY_PATH:
                try:
                    report = ready()
                except errors.StartupError as exc:
                    self._send_error(errors.NotReady(str(exc)))
                else:
                    body = json.dumps({"status": "ready", **report}).encode()
                    self._send(200, "application/json", body)
            elif self.path == METRICS_PATH:
                self._send(200, CONTENT_TYPE_LATEST, generate_latest())
            else:
                paths = ", ".join(PATHS)
                self._send_error(errors.NotFound(f"no such path: this server has {paths}"))

        def _send_error(self, error: errors.ReplicatorError) -> None:
            self._send(error.status_code, "application/json", json.dumps(error.body()).encode())

        def _send(self, status: int, media_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("health: " + format, *args)

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
