"""SIGTERM: the service stops taking work, finishes what is in flight, and exits cleanly."""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from app.dev import emulators
from tests import http_calls
from tests.conftest import Buckets
from tests.service_process import running_service, service_settings


def test_sigterm_finishes_the_copy_in_flight_then_exits(
    tmp_path: Path,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    buckets: Buckets,
) -> None:
    data = buckets.put_random("big.bin", 48 * 1024 * 1024)
    settings = service_settings(
        moto_server.url,
        gcs_server.url,
        buckets.dest,
        UPLOAD_CHUNK_SIZE=str(4 * 1024 * 1024),  # many chunks: the copy takes a while
    )
    with running_service(tmp_path, settings) as service:
        outcome: dict[str, Any] = {}

        def copy() -> None:
            outcome["response"] = http_calls.post(
                service.url + "/v1/replicate",
                json={"s3_bucket": buckets.source, "s3_key": "big.bin"},
                timeout=120,
            )

        worker = threading.Thread(target=copy)
        worker.start()
        while (
            "replicator_objects_in_flight 1.0" not in http_calls.get(service.url + "/metrics").text
        ):
            assert worker.is_alive(), outcome
            time.sleep(0.05)

        service.process.send_signal(signal.SIGTERM)
        worker.join(timeout=120)
        exit_code = service.process.wait(timeout=60)

        refused = False
        try:
            http_calls.get(service.url + "/health", timeout=2)
        except httpx.HTTPError:
            refused = True

    # uvicorn re-raises the signal once it has shut down, as supervisors expect.
    assert exit_code in (0, -signal.SIGTERM), service.log.read_text()
    assert "Application shutdown complete" in service.log.read_text()
    assert refused
    response = outcome["response"]
    assert response.status_code == 200, response.text
    assert response.json()["action"] == "replicated"
    copied = buckets.destination_bytes("big.bin")
    assert hashlib.md5(copied).digest() == hashlib.md5(data).digest()
